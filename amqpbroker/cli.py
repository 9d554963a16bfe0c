"""Command line: ``amqpbroker serve [flags]``. Every flag can also be set in the environment
as ``AMQPBROKER_<FLAG>`` (e.g. ``AMQPBROKER_DATA_DIR``); a flag on the command line wins."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .config import Config

log = logging.getLogger("amqpbroker")

def boolean(text: str) -> bool:
    """A flag that is on or off: ``--tls-fail-if-no-peer-cert`` alone, or true / false."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def choice(*names: str):
    def check(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(names)}, got {text!r}")
        return text
    check.__name__ = "one of " + ", ".join(names)      # argparse names the type in errors
    return check


def names_list(text: str) -> tuple:
    return tuple(n for n in text.split(",") if n)


FLAGS = [
    # (flag, type, help)
    ("host", str, "interface to listen on (default: all interfaces)"),
    ("port", int, "AMQP port (default 5672; 0 = any free port)"),
    ("management_port", int, "management HTTP port (default 15672; 0 = off; -1 = any free port)"),
    ("data_dir", str, "data directory (default ./amqpbroker-data); one broker at a time: "
                      "another one's start waits for it to exit, then refuses"),
    ("data_dir_wait", float, "seconds a start waits for the broker already using the data "
                             "directory to exit (default 10)"),
    ("log_level", str, "debug, info, warning or error (default info)"),
    ("log_format", choice("text", "json"), "text for people, or json: one object per line "
                                           "with ts, level, logger, msg, pid, role and the "
                                           "event's context (default text)"),
    ("frame_max", int, "largest frame the server accepts (default 131072)"),
    ("channel_max", int, "most channels per connection (default 2047)"),
    ("heartbeat", int, "heartbeat interval the server proposes, seconds (default 60)"),
    ("max_message_size", int, "largest message body, bytes (default 134217728)"),
    ("segment_bytes", int, "log segment size, bytes (default 67108864)"),
    ("fsync_interval_ms", int, "fsync period of queues declared with x-fsync=interval (default 1000)"),
    ("group_revoke_grace_ms", int, "consumer groups: how long a revoked partition's in-flight "
                                   "deliveries may still be acked before it moves (default "
                                   "30000)"),
    ("group_session_timeout_ms", int, "consumer groups: how long a static member "
                                      "(x-group-instance-id) keeps its partitions after its "
                                      "connection is lost (default 45000)"),
    ("consumer_timeout", int, "ms a delivery may stay unacknowledged before its channel is "
                              "closed with 406 and its unacked messages requeued (RabbitMQ's "
                              "consumer_timeout; a queue's x-consumer-timeout or its policy's "
                              "consumer-timeout overrides it; default 1800000, 0 = never)"),
    ("dead_letter_confirm_timeout", int, "ms after which a quorum queue's at-least-once dead "
                                         "letter (x-dead-letter-strategy) not yet confirmed "
                                         "by its targets, or not routable, is sent again "
                                         "(RabbitMQ's dead_letter_worker_publisher_confirm_"
                                         "timeout; default 180000, at least 100)"),
    ("federation_check_interval", int, "ms between a federation exchange link's checks "
                                       "that its internal exchange upstream still exists; "
                                       "gone, the link sets up again (RabbitMQ's "
                                       "internal_exchange_check_interval; default 90000)"),
    ("event_exchange", boolean, "publish the broker's events (queue.created, connection.closed, "
                             "user.authentication.failure, ...) to the topic exchange "
                             "amq.rabbitmq.event, as RabbitMQ's rabbitmq_event_exchange "
                             "plugin (default off)"),
    ("event_exchange_vhost", str, "the vhost of amq.rabbitmq.event (default /)"),
    ("mqtt_port", int, "MQTT 3.1 / 3.1.1 port, as RabbitMQ's rabbitmq_mqtt plugin (RabbitMQ "
                       "listens on 1883; default 0 = off; -1 = any free port)"),
    ("mqtt_tls_port", int, "MQTT over TLS, with --tls-cert (and --tls-verify, --tls-ca as "
                           "AMQPS; RabbitMQ listens on 8883; default 0 = off; -1 = any free "
                           "port)"),
    ("web_mqtt_port", int, "MQTT over WebSockets, as RabbitMQ's rabbitmq_web_mqtt plugin "
                           "(RabbitMQ listens on 15675; default 0 = off; -1 = any free port)"),
    ("web_mqtt_path", str, "the WebSocket endpoint's path (default /ws)"),
    ("mqtt_vhost", str, "the vhost of MQTT clients whose user name does not say "
                        "vhost:user (default /)"),
    ("mqtt_exchange", str, "the topic exchange MQTT topics are routed through (default "
                           "amq.topic)"),
    ("mqtt_allow_anonymous", boolean, "MQTT clients without credentials log in as the "
                                      "default user (default true, as RabbitMQ's)"),
    ("mqtt_ssl_cert_login", boolean, "an MQTT client on TLS that sends no credentials logs "
                                     "in as its verified certificate's user (its subject, "
                                     "or its CN with --tls-login-from common_name), without "
                                     "a password, as RabbitMQ's mqtt.ssl_cert_login "
                                     "(default false)"),
    ("amqp1_default_user", str, "AMQP 1.0 clients (served on the AMQP port, as RabbitMQ's "
                                "rabbitmq_amqp1_0 plugin) that log in with SASL ANONYMOUS or "
                                "without SASL are this user, as RabbitMQ's "
                                "amqp1_0.default_user (default guest, so only from "
                                "loopback; an empty string refuses them)"),
    ("stomp_port", int, "STOMP 1.0 / 1.1 / 1.2 port, as RabbitMQ's rabbitmq_stomp plugin "
                        "(RabbitMQ listens on 61613; default 0 = off; -1 = any free port)"),
    ("stomp_tls_port", int, "STOMP over TLS, with --tls-cert (RabbitMQ listens on 61614; "
                            "default 0 = off; -1 = any free port)"),
    ("web_stomp_port", int, "STOMP over WebSockets, as RabbitMQ's rabbitmq_web_stomp plugin "
                            "(RabbitMQ listens on 15674; default 0 = off; -1 = any free port)"),
    ("web_stomp_path", str, "the STOMP WebSocket endpoint's path (default /ws)"),
    ("stomp_vhost", str, "the vhost of STOMP clients whose CONNECT has no host header "
                         "(default /)"),
    ("stomp_topic_exchange", str, "the exchange /topic/ destinations route through "
                                  "(default amq.topic)"),
    ("stomp_ssl_cert_login", boolean, "a STOMP client on TLS whose CONNECT has no login "
                                      "header logs in as its verified certificate's user, "
                                      "without a password, as RabbitMQ's "
                                      "stomp.ssl_cert_login (default false)"),
    ("stream_port", int, "RabbitMQ's stream protocol port, as its rabbitmq_stream plugin, for "
                         "rstream and the other stream clients (RabbitMQ listens on 5552; "
                         "default 0 = off; -1 = any free port)"),
    ("stream_tls_port", int, "the stream protocol over TLS, with --tls-cert (RabbitMQ "
                             "listens on 5551; default 0 = off; -1 = any free port)"),
    ("stream_advertised_host", str, "the host the stream protocol's Open and Metadata "
                                    "answers name (RabbitMQ's stream.advertised_host; "
                                    "default: the address the client connected to)"),
    ("stream_advertised_port", int, "the port they name (RabbitMQ's "
                                    "stream.advertised_port; default: the port the client "
                                    "connected to)"),
    ("stomp_implicit_connect", boolean, "a STOMP client may skip CONNECT: its first frame "
                                        "logs it in as the default user, with no CONNECTED "
                                        "frame, as RabbitMQ's stomp.implicit_connect "
                                        "(default false)"),
    ("stomp_hide_server_info", boolean, "CONNECTED frames without the server header, as "
                                        "RabbitMQ's stomp.hide_server_info (default false)"),
    ("tracing_dir", str, "where traces (/api/traces, RabbitMQ's rabbitmq_tracing) write their "
                         "log files (default: tracing in the data directory)"),
    ("cache_limit", int, "bytes of message bodies kept in memory (default 67108864)"),
    ("transient_memory_limit", int, "bytes of non-durable queues' bodies kept in memory, not "
                                    "written, until paged to the log (default -1 = half the "
                                    "memory high watermark, as RabbitMQ pages)"),
    ("open_files_limit", int, "most queue files (segments, indexes, ack logs) a process keeps "
                              "open; the least recently used are closed and reopened when "
                              "needed (default 0 = half the open-files limit, at least 64)"),
    ("memory_high_watermark", float, "memory alarm threshold, fraction of RAM (default 0.4)"),
    ("disk_free_limit", int, "disk alarm threshold, bytes free (default 50000000)"),
    ("workers", int, "partition worker processes owning the queues (default -1 = from the "
                     "CPU count; 0 = queues run in the main process)"),
    ("frontends", int, "AMQP front-end processes sharing the port (default -1 = from the "
                       "CPU count; 0 = the supervisor serves AMQP itself)"),
    ("watchdog_timeout", float, "seconds a worker or front-end process may stop running "
                                "(its event loop stuck) before its supervisor kills it "
                                "(SIGKILL) and starts another; 0 = never (default 60)"),
    ("tls_cert", str, "PEM certificate (chain) of the server; turns on AMQPS and HTTPS"),
    ("tls_key", str, "PEM private key of --tls-cert (default: in the --tls-cert file)"),
    ("tls_ca", str, "PEM CA certificates that client certificates must chain to"),
    ("tls_port", int, "AMQPS port, with --tls-cert (default 5671; 0 = any free port)"),
    ("management_tls_port", int, "management HTTPS port, with --tls-cert (default 15671; "
                                 "0 = off; -1 = any free port)"),
    ("tls_verify", choice("none", "peer"), "peer: ask clients for a certificate and check it "
                                           "against --tls-ca (default none)"),
    ("tls_fail_if_no_peer_cert", boolean, "with --tls-verify peer: refuse clients that send "
                                          "no certificate (default false)"),
    ("tls_login_from", choice("distinguished_name", "common_name"),
     "EXTERNAL: the user name is the certificate's subject DN or its CN "
     "(default distinguished_name)"),
    ("collect_statistics", choice("fine", "coarse", "none"),
     "message statistics, as RabbitMQ's collect_statistics: none counts nothing "
     "(default fine)"),
    ("collect_statistics_interval", int, "statistics sampling period for the management "
                                         "API's rates, ms (default 5000)"),
    ("prometheus_port", int, "Prometheus metrics HTTP port (default 15692; 0 = off; "
                             "-1 = any free port)"),
    ("heap_trim_interval", int, "seconds between two full garbage collections and "
                                "malloc_trim(0) of the supervisor, which give its freed "
                                "memory back (default 60; 0 = never)"),
    ("load_definitions", str, "a definitions file (RabbitMQ's JSON export) imported at "
                              "start, before the ready line, as POST /api/definitions: "
                              "checked whole, nothing applied if an entry is refused; in a "
                              "cluster through etcd (default: none)"),
    ("cluster", str, "join a cluster: etcd client URLs, comma-separated, e.g. "
                     "http://127.0.0.1:2379 (default: none, a single node)"),
    ("node_name", str, "this node's name in the cluster (default: the host name)"),
    ("cluster_port", int, "port of the link between nodes (default 25672; 0 = any free port)"),
    ("advertise_host", str, "host name or address other nodes and clients reach this node "
                            "at (default: --host, else the host's FQDN)"),
    ("cluster_lease_ttl", int, "seconds without etcd before a node counts as lost and fences "
                               "itself (default 10)"),
    ("cluster_join_timeout", float, "seconds a starting node keeps trying to reach etcd "
                                    "before it gives up (exit 1; default 15)"),
    ("cluster_place_timeout", float, "seconds the declare of a new queue waits for the "
                                     "controller to place it; then it is answered, and a "
                                     "replicated queue nacks publishes until it is placed "
                                     "(default 10)"),
    ("loopback_users", names_list, "users who may log in from loopback only, comma-separated; "
                                   "'' for none (RabbitMQ's loopback_users; default guest)"),
    ("auth_backends", str, "the authentication backends, in order, comma-separated: "
                           "internal (the broker's users) and oauth2 (a JWT as the password; "
                           "RabbitMQ's auth_backends; default internal)"),
    ("oauth2_resource_server_id", str, "OAuth 2: the audience a token must name and the "
                                       "prefix of its scopes (RabbitMQ's auth_oauth2."
                                       "resource_server_id; default rabbitmq)"),
    ("oauth2_signing_keys", names_list, "OAuth 2: the keys tokens are signed with, "
                                        "comma-separated KID=file pairs (a PEM public RSA "
                                        "or EC key, or a JWK: RSA, EC or a symmetric oct "
                                        "key; RabbitMQ's auth_oauth2.signing_keys)"),
    ("oauth2_default_key", str, "OAuth 2: the key (its KID) of a token whose header names "
                                "none (RabbitMQ's auth_oauth2.default_key)"),
    ("oauth2_additional_scopes_key", str, "OAuth 2: a claim whose scopes count too (a "
                                          "list, a string, or an object keyed by the "
                                          "resource server id; RabbitMQ's auth_oauth2."
                                          "additional_scopes_key)"),
    ("oauth2_jwks_url", str, "OAuth 2: the identity provider's JWKS URL, whose keys "
                             "verify tokens too; read at start and again when a token names "
                             "an unknown key (RabbitMQ's auth_oauth2.jwks_url)"),
    ("replica_lag_time", float, "seconds a follower of a replicated queue may stay behind the "
                                "leader before the leader removes it from the in-sync "
                                "replicas (default 10)"),
    ("replica_confirm_timeout", float, "seconds a publish to a replicated queue may wait for "
                                       "its in-sync replicas before it is nacked (Kafka's "
                                       "request.timeout.ms; default 30)"),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amqpbroker", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ctl", help="manage a running broker through its management API "
                               "(amqpbroker ctl --help)")
    serve = sub.add_parser("serve", help="run the broker")
    defaults = Config()
    for name, typ, help_ in FLAGS:
        env = os.environ.get("AMQPBROKER_" + name.upper())
        default = typ(env) if env is not None else getattr(defaults, name)
        extra = {"nargs": "?", "const": True} if typ is boolean else {}
        serve.add_argument("--" + name.replace("_", "-"), type=typ, default=default,
                           help=help_ + f" [env AMQPBROKER_{name.upper()}]", **extra)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ctl"]:
        from .ctl import main as ctl_main
        return ctl_main(argv[1:])
    args = parser().parse_args(argv)
    if args.command == "serve":
        cfg = Config(**{name: getattr(args, name) for name, _, _ in FLAGS})
        return serve(cfg)
    return 2


def prepare_process(log_level: str, role: str = "supervisor",
                    log_format: str = "text", *, holds_bodies: bool = True) -> None:
    """What every broker process does first: logging, descriptors, GC, uvloop.
    ``holds_bodies``: the process keeps queued messages (one process, a worker), so the
    heap's fresh pages are faulted off its loop by a thread (amqpbroker/prefault.py)."""
    from . import logs
    logs.setup(log_level, log_format, role)
    raise_fd_limit()
    tune_gc()
    from .prefault import HeapPrefaulter
    HeapPrefaulter().start(thread=holds_bodies)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass


def serve(cfg: Config) -> int:
    try:
        one_process = cfg.layout()[0] == 0
    except ValueError:              # an impossible layout: _serve says so
        one_process = True
    prepare_process(cfg.log_level, "supervisor", cfg.log_format, holds_bodies=one_process)
    try:
        from .supervisor import dirlock
        dirlock.lock(cfg.data_dir, cfg.data_dir_wait)      # one broker per data directory
        return asyncio.run(_serve(cfg))
    except (OSError, ValueError) as exc:
        # a port in use, an unwritable data directory or one another broker uses, an
        # impossible process layout: say so in one line, exit 1
        log.error("cannot start: %s", exc)
        return 1


async def _serve(cfg: Config) -> int:
    """The supervisor: workers first (they own the queues), then metadata and recovery, then
    the AMQP listener (here, or in front-end processes), then management."""
    from .frontend import tls
    from .frontend.listener import AMQPServer
    from .supervisor.owner import MetadataOwner
    from .supervisor.frontends import start_frontends, stop_frontends
    from .supervisor.workers import start_workers, stop_workers

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    children: list = []

    def on_signal() -> None:
        # a signal to the whole process group (Ctrl-C, `timeout`, systemd) also reaches the
        # children: their exits are the shutdown, not crashes to restart
        for c in children:
            c.stopping = True
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)     # first: a signal during start-up or right
    broker = MetadataOwner(cfg, loop)               # after "ready" still shuts down cleanly
    server = AMQPServer(broker)
    workers, frontends, mgmt, prometheus, cluster = [], [], None, None, None
    trimmer = None
    try:
        n_workers, n_frontends = cfg.layout()
        # a certificate that cannot be read stops the start here, in one line
        amqps = tls.amqps_context(cfg) if cfg.tls else None
        if cfg.mqtt_tls_port and amqps is None:
            raise ValueError("--mqtt-tls-port needs --tls-cert (the server's certificate)")
        if cfg.stomp_tls_port and amqps is None:
            raise ValueError("--stomp-tls-port needs --tls-cert (the server's certificate)")
        if cfg.stream_tls_port and amqps is None:
            raise ValueError("--stream-tls-port needs --tls-cert (the server's certificate)")
        https = tls.https_context(cfg) if cfg.tls and cfg.management_tls_port else None
        if cfg.cluster:             # metadata in etcd: changes wait for the join below
            from .cluster.node import ClusterNode
            cluster = ClusterNode(cfg)
            cluster.attach(broker)
        if n_workers:
            workers = broker.workers = await start_workers(broker, n_workers)
            children.extend(workers)
        broker.start([w.client for w in workers] or None)
        if n_frontends:
            listen = _listening_socket(cfg.host, cfg.port)
            host, port = listen.getsockname()[:2]
            tls_listen = _listening_socket(cfg.host, cfg.tls_port) if amqps else None
            if tls_listen is not None:
                tls_host, tls_port = tls_listen.getsockname()[:2]
            frontends = await start_frontends(broker, workers, listen, n_frontends,
                                              tls_listen)
            children.extend(frontends)
        else:
            host, port = (await server.start(cfg.host, cfg.port))[0]
            if amqps:
                tls_host, tls_port = (await server.start(cfg.host, cfg.tls_port,
                                                         ssl=amqps))[0]
        broker.listeners.append({"protocol": "amqp", "ip_address": host, "port": port})
        if amqps:
            broker.listeners.append({"protocol": "amqp/ssl", "ip_address": tls_host,
                                     "port": tls_port})
        line = f"amqpbroker ready amqp={_show(host)}:{port}"
        if amqps:
            line += f" amqps={_show(tls_host)}:{tls_port}"
        from .stats.collector import Collector
        broker.collector = Collector(broker, server)
        if cfg.management_port or https:
            from .mgmt.app import ManagementServer
            mgmt = ManagementServer(broker, server)
        if cfg.management_port:
            mhost, mport = await mgmt.start(cfg.host, max(cfg.management_port, 0))
            line += f" management={_show(mhost)}:{mport}"
        if https:
            mhost, mport = await mgmt.start(cfg.host, max(cfg.management_tls_port, 0), https)
            line += f" https={_show(mhost)}:{mport}"
        if cfg.prometheus_port:
            from .mgmt.prometheus import PrometheusServer
            prometheus = PrometheusServer(broker, server)
            phost, pport = await prometheus.start(cfg.host, max(cfg.prometheus_port, 0))
            line += f" prometheus={_show(phost)}:{pport}"
        if cfg.management_port or https:
            broker.collector.start()        # message_stats' rates: sampled for the API
        if workers:
            line += " workers=" + ",".join(str(w.pid) for w in workers)
        if frontends:
            line += " frontends=" + ",".join(str(f.pid) for f in frontends)
        if cluster is not None:
            await cluster.start(port, mport if cfg.management_port else 0)
            broker.cluster = cluster        # /api/nodes lists the cluster from now on
            line += f" node={cluster.name} cluster={cluster.cluster_port}"
        if cfg.load_definitions:            # after the join: in a cluster it goes to etcd
            from .mgmt.definitions import load_file
            await load_file(broker, cfg.load_definitions)
        # held messages of x-delayed-message exchanges: due ones go now that the queues are
        # open and the node has its cluster's metadata (exchanges, bindings)
        broker.delayed.start()
        broker.shovels.start()              # dynamic shovels: a local URI needs the listener
        broker.federation.start()           # federation links: so do they
        line += await _start_adapters(broker, cfg, amqps)      # RabbitMQ's MQTT, STOMP
        if cfg.event_exchange:              # RabbitMQ's event exchange plugin at boot
            from .frontend.events import declare_exchange
            declare_exchange(broker)
        from .supervisor.heap import HeapTrimmer
        # a full collection would walk every queue where the supervisor holds them
        trimmer = broker.heap_trimmer = HeapTrimmer(loop, cfg.heap_trim_interval,
                                                    collect=bool(workers)).start()
        print(line, flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        if trimmer is not None:
            trimmer.stop()
        # clients first (320 CONNECTION_FORCED), then the cluster: a client must not stay
        # connected to a node that no longer leads (what waited for the HW was nacked)
        await broker.federation.stop()      # their connections closed, not forced
        await broker.shovels.stop()
        if broker.mqtt is not None:
            await broker.mqtt.stop()
        if broker.stomp is not None:
            await broker.stomp.stop()
        if broker.stream is not None:
            await broker.stream.stop()
        await stop_frontends(frontends)
        await server.stop()
        if cluster is not None:
            await cluster.leave()
        collector = getattr(broker, "collector", None)
        if collector is not None:
            await collector.stop()
        if prometheus is not None:
            await prometheus.stop()
        if mgmt is not None:
            await mgmt.stop()
        broker.close()
        await stop_workers(workers)
    log.info("stopped")
    return 0


def tune_gc() -> None:
    """The broker holds many long-lived objects (queued offsets, cached records) and allocates
    a few short-lived ones per message. With CPython's default thresholds the cyclic collector
    runs every 700 allocations and keeps re-walking the long-lived heap; our hot path makes no
    reference cycles, so collect rarely (reference counting frees almost everything)."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def raise_fd_limit() -> None:
    """Every connection is a descriptor: lift the soft limit to the hard one, as RabbitMQ's
    packaging does, so thousands of clients can connect."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _listening_socket(host: str, port: int):
    """An AMQP (or AMQPS) socket every front-end process inherits and accepts on."""
    import socket
    try:
        sock = socket.create_server((host or "", port), family=socket.AF_INET, backlog=1024)
    except OSError as exc:          # worded as asyncio words it for the in-process listener
        raise OSError(exc.errno, f"error while attempting to bind on address "
                                 f"{(host, port)!r}: {(exc.strerror or '').lower()}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


async def _start_adapters(broker, cfg: Config, amqps) -> str:
    """The MQTT, STOMP and stream listeners asked for (each off by default, as RabbitMQ's
    plugins):
    their ports, shown in ``/api/overview``'s listeners and added to the ready line."""
    from .mqtt.listener import MqttServer
    from .stomp.listener import StompServer
    added = ""
    for name, server_class, web_path in (("mqtt", MqttServer, cfg.web_mqtt_path),
                                         ("stomp", StompServer, cfg.web_stomp_path)):
        # (ready-line label, /api/overview protocol, port, TLS context, over WebSockets)
        ports = ((name, name, getattr(cfg, f"{name}_port"), None, False),
                 (f"{name}s", f"{name}/ssl", getattr(cfg, f"{name}_tls_port"), amqps, False),
                 (f"web-{name}", f"http/web-{name}", getattr(cfg, f"web_{name}_port"), None,
                  True))
        if not any(port for _, _, port, _, _ in ports):
            continue
        server = server_class(broker)
        setattr(broker, name, server)
        for label, protocol, port, ssl, web in ports:
            if not port:
                continue
            if web:
                host, bound = await server.start_web(cfg.host, max(port, 0), web_path)
            else:
                host, bound = await server.start(cfg.host, max(port, 0), ssl)
            broker.listeners.append({"protocol": protocol, "ip_address": host, "port": bound})
            added += f" {label}={_show(host)}:{bound}"
    if cfg.stream_port or cfg.stream_tls_port:
        from .stream_protocol.listener import StreamServer
        broker.stream = StreamServer(broker)
        for label, protocol, port, ssl in (("stream", "stream", cfg.stream_port, None),
                                           ("streams", "stream/ssl", cfg.stream_tls_port,
                                            amqps)):
            if port:
                host, bound = await broker.stream.start(cfg.host, max(port, 0), ssl)
                broker.listeners.append({"protocol": protocol, "ip_address": host,
                                         "port": bound})
                added += f" {label}={_show(host)}:{bound}"
    return added


def _show(host: str) -> str:
    return "0.0.0.0" if host in ("", "::") else host
