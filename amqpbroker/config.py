"""Broker configuration: one dataclass, filled from flags and AMQPBROKER_<FLAG> variables."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    host: str = ""                      # "" = all interfaces, as RabbitMQ
    port: int = 5672
    management_port: int = 15672        # 0 = off, -1 = any free port (tests)
    data_dir: str = "./amqpbroker-data"
    data_dir_wait: float = 10.0         # seconds a start waits for another broker's lock on
    #                                     the data directory to go (supervisor/dirlock.py)
    log_level: str = "info"
    log_format: str = "text"            # text (people) | json (one object per line)
    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 128 * 1024 * 1024
    segment_bytes: int = 64 * 1024 * 1024
    fsync_interval_ms: int = 1000                # queues declared with x-fsync=interval
    cache_limit: int = 64 * 1024 * 1024          # bodies kept in memory across all queues
    # bodies of non-durable queues kept unwritten before they are paged to the log; -1 = half
    # the memory high watermark (RabbitMQ's vm_memory_high_watermark_paging_ratio)
    transient_memory_limit: int = -1
    open_files_limit: int = 0                    # storage files open per process; 0 = half
                                                 # of RLIMIT_NOFILE, at least 64
    memory_high_watermark: float = 0.4           # fraction of RAM, as RabbitMQ's default
    disk_free_limit: int = 50 * 1000 * 1000      # bytes, as RabbitMQ's default
    default_user: str = "guest"
    default_pass: str = "guest"
    loopback_users: tuple = ("guest",)
    # RabbitMQ's auth_backends, in order: internal (the broker's users), oauth2 (JWT tokens
    # as passwords, frontend/oauth2.py) with its resource server id and signing keys
    auth_backends: str = "internal"
    oauth2_resource_server_id: str = "rabbitmq"
    oauth2_signing_keys: tuple = ()              # "KID=PEM file" each
    oauth2_default_key: str = ""                 # the key of a token whose header has no kid
    oauth2_jwks_url: str = ""                    # the identity provider's JWKS (its keys)
    oauth2_additional_scopes_key: str = ""       # a claim holding more scopes
    workers: int = -1                            # partition worker processes; -1 = by CPUs
    frontends: int = -1                          # AMQP front-end processes; -1 = by CPUs
    watchdog_timeout: float = 60.0               # s a stuck child runs before a kill; 0 = never
    # consumer groups: a revoked partition's in-flight deliveries may be acked this long
    # before it moves on; a static member (x-group-instance-id) keeps its partitions this
    # long after its connection is lost (Kafka's session.timeout.ms default)
    group_revoke_grace_ms: int = 30000
    group_session_timeout_ms: int = 45000
    # RabbitMQ's consumer_timeout: a channel holding a delivery unacknowledged this long is
    # closed (frontend/ack_timeouts.py); 0 = never
    consumer_timeout: int = 1800000
    # at-least-once dead-lettering (worker/discards.py): a held dead letter not confirmed by
    # its targets this long is sent again (RabbitMQ's
    # dead_letter_worker_publisher_confirm_timeout)
    dead_letter_confirm_timeout: int = 180000
    # RabbitMQ's federation (amqpbroker/federation): ms between an exchange link's checks
    # that its internal exchange upstream is still there (internal_exchange_check_interval)
    federation_check_interval: int = 90000
    # RabbitMQ's event exchange plugin (frontend/events.py): amq.rabbitmq.event in this vhost
    event_exchange: bool = False
    event_exchange_vhost: str = "/"
    # RabbitMQ's MQTT plugin (amqpbroker/mqtt): MQTT 3.1 / 3.1.1 clients over AMQP
    mqtt_port: int = 0                           # 0 = off, -1 = any free port (1883: RabbitMQ's)
    mqtt_tls_port: int = 0                       # MQTT over TLS, with tls_cert (8883: RabbitMQ's)
    web_mqtt_port: int = 0                       # MQTT over WebSockets (15675: RabbitMQ's)
    web_mqtt_path: str = "/ws"                   # its HTTP path (RabbitMQ's web_mqtt.ws_path)
    mqtt_vhost: str = "/"                        # a user name without "vhost:" logs in here
    mqtt_exchange: str = "amq.topic"             # topics are its routing keys
    mqtt_allow_anonymous: bool = True            # no credentials: default_user / default_pass
    mqtt_ssl_cert_login: bool = False            # no credentials, TLS: the certificate's user
    # AMQP 1.0 on the AMQP port (amqpbroker/amqp10), as RabbitMQ's rabbitmq_amqp1_0 plugin
    amqp1_default_user: str = "guest"            # ANONYMOUS / no SASL logs in as it ("": no)
    # RabbitMQ's STOMP plugin (amqpbroker/stomp): STOMP 1.0-1.2 clients over AMQP
    stomp_port: int = 0                          # 0 = off, -1 = any free port (61613: RabbitMQ's)
    stomp_tls_port: int = 0                      # STOMP over TLS, with tls_cert (61614)
    web_stomp_port: int = 0                      # STOMP over WebSockets (15674: RabbitMQ's)
    web_stomp_path: str = "/ws"                  # its HTTP path (RabbitMQ's web_stomp.ws_path)
    stomp_vhost: str = "/"                       # a CONNECT without a host header logs in here
    stomp_topic_exchange: str = "amq.topic"      # /topic/ destinations route through it
    stomp_ssl_cert_login: bool = False           # no login header, TLS: the certificate's user
    stomp_implicit_connect: bool = False         # a first frame other than CONNECT logs in
    stomp_hide_server_info: bool = False         # CONNECTED without its server header
    # RabbitMQ's stream protocol (amqpbroker/stream_protocol): rstream and the stream clients
    stream_port: int = 0                         # 0 = off, -1 = any free port (5552: RabbitMQ's)
    stream_tls_port: int = 0                     # the stream protocol over TLS (5551)
    stream_advertised_host: str = ""             # what Open and Metadata name ("": the address
    stream_advertised_port: int = 0              # the client connected to)
    # the rabbitmq_tracing plugin's log files (amqpbroker/tracing.py); "" = <data_dir>/tracing
    tracing_dir: str = ""
    # TLS: AMQPS and HTTPS listen only when tls_cert is set (frontend/tls.py)
    tls_port: int = 5671                         # AMQPS; 0 = any free port
    management_tls_port: int = 15671             # HTTPS; 0 = off, -1 = any free port
    tls_cert: str = ""                           # PEM certificate (chain) of the server
    tls_key: str = ""                            # its private key ("" = in tls_cert)
    tls_ca: str = ""                             # CAs that client certificates must chain to
    tls_verify: str = "none"                     # none | peer (ssl_options.verify)
    tls_fail_if_no_peer_cert: bool = False       # ssl_options.fail_if_no_peer_cert
    tls_login_from: str = "distinguished_name"   # EXTERNAL's user name: or common_name
    # statistics (amqpbroker/stats): RabbitMQ's collect_statistics and its interval (ms)
    collect_statistics: str = "fine"             # fine | coarse | none (no counting)
    collect_statistics_interval: int = 5000
    prometheus_port: int = 15692                 # 0 = off, -1 = any free port (tests)
    heap_trim_interval: int = 60                 # s between malloc_trim(0) (supervisor/heap.py)
    load_definitions: str = ""                   # a definitions file imported at start
    # cluster (amqpbroker/cluster/): on only when cluster names etcd's endpoints
    cluster: str = ""                            # etcd client URLs, comma-separated
    node_name: str = ""                          # "" = the host name
    cluster_port: int = 25672                    # link between nodes; 0 = any free port
    advertise_host: str = ""                     # how others reach us; "" = --host or FQDN
    cluster_lease_ttl: int = 10                  # seconds: death detection and fencing
    cluster_join_timeout: float = 15.0           # s to reach etcd at start, then exit 1
    cluster_place_timeout: float = 10.0          # s a new queue's declare waits for placement
    replica_lag_time: float = 10.0               # s a follower may lag before leaving the ISR
    replica_confirm_timeout: float = 30.0        # s a publish may wait for the ISR: then nack

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def transient_limit(self) -> int:
        """``transient_memory_limit`` in bytes, -1 resolved from the RAM and the watermark."""
        if self.transient_memory_limit >= 0:
            return self.transient_memory_limit
        import os
        try:
            ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return self.cache_limit
        return int(ram * self.memory_high_watermark * 0.5)

    def layout(self, cpus: int | None = None) -> tuple[int, int]:
        """(workers, front-ends) after resolving -1 from the CPU count.

        Below 4 CPUs: one process (0, 0). On 2 cores the clients need the other core, and
        the rings cost 30-60 % more CPU per message than function calls, so splitting only
        loses (bench/RESULTS.md, "Process layouts"). From 4 CPUs: front-ends did ~60 % of the
        broker's work per message and workers ~40 % (e2e 1 KiB), so 3/5 of the CPUs serve
        AMQP and the rest own queues; the supervisor is off the message path."""
        import os
        cpus = cpus or os.cpu_count() or 1
        frontends, workers = self.frontends, self.workers
        if frontends < 0:
            frontends = 0 if cpus < 4 or workers == 0 else max(1, cpus * 3 // 5)
        if workers < 0:
            workers = 0 if cpus < 4 and not frontends else max(1, cpus - frontends)
        if frontends and not workers:
            raise ValueError("--frontends needs at least one worker process (--workers)")
        return workers, frontends
