"""Statistics and Prometheus metrics, through real clients: publish, get and consume with
pika, then scrape ``/metrics`` (and the management API's ``message_stats``) and check the
numbers moved by exactly what the clients did, in one process and split into front-end and
worker processes."""
from __future__ import annotations

import os
import signal
import subprocess
import urllib.request

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until

FAST_SAMPLES = ("--collect-statistics-interval", "200")


@pytest.fixture(params=sorted(LAYOUTS))
def broker(request, tmp_path):
    with BrokerProcess(tmp_path, *LAYOUTS[request.param], *FAST_SAMPLES, management=True,
                       prometheus=True) as b:
        yield b


def scrape(b: BrokerProcess, path: str = "/metrics") -> dict:
    """{(sample name, frozenset of labels): value}"""
    with urllib.request.urlopen(f"http://127.0.0.1:{b.prometheus_port}{path}", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


AMQP = {"protocol": "amqp091"}
CLASSIC = {"protocol": "amqp091", "queue_type": "rabbit_classic_queue"}


def global_counts(samples: dict) -> dict:
    g = "rabbitmq_global_messages_"
    return {
        "received": value(samples, g + "received_total", **AMQP),
        "received_confirm": value(samples, g + "received_confirm_total", **AMQP),
        "routed": value(samples, g + "routed_total", **AMQP),
        "dropped": value(samples, g + "unroutable_dropped_total", **AMQP),
        "returned": value(samples, g + "unroutable_returned_total", **AMQP),
        "confirmed": value(samples, g + "confirmed_total", **AMQP),
        "delivered": value(samples, g + "delivered_total", **CLASSIC),
        "consume_manual": value(samples, g + "delivered_consume_manual_ack_total", **CLASSIC),
        "consume_auto": value(samples, g + "delivered_consume_auto_ack_total", **CLASSIC),
        "get_manual": value(samples, g + "delivered_get_manual_ack_total", **CLASSIC),
        "get_auto": value(samples, g + "delivered_get_auto_ack_total", **CLASSIC),
        "get_empty": value(samples, g + "get_empty_total", **CLASSIC),
        "redelivered": value(samples, g + "redelivered_total", **CLASSIC),
        "acked": value(samples, g + "acknowledged_total", **CLASSIC),
    }


def work_with_pika(b: BrokerProcess, queue: str) -> None:
    """7 confirmed publishes to three queues, 2 unroutable dropped, 1 returned; from the
    first, 3 consumed with manual ack (the first nacked with requeue once, so redelivered);
    from the second, 2 consumed with auto-ack; from the third, 1 get with ack, 1 without,
    then a get-empty. Each queue holds exactly what is taken, so no delivery is in flight
    when a consumer is cancelled."""
    manual, auto, gets = queue + "-manual", queue + "-auto", queue + "-get"
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    ch = conn.channel()
    ch.confirm_delivery()
    for q, n in ((manual, 3), (auto, 2), (gets, 2)):
        ch.queue_declare(q)
        for i in range(n):
            ch.basic_publish("", q, b"m%d" % i)
    ch.basic_publish("", "nowhere-" + queue, b"dropped")
    ch.basic_publish("amq.direct", "nowhere", b"dropped")
    plain = conn.channel()                  # no confirms: a mandatory return is a callback
    returned = []
    plain.add_on_return_callback(lambda *a: returned.append(a))
    plain.basic_publish("", "nowhere-" + queue, b"returned", mandatory=True)
    wait_until(lambda: returned, step=lambda: conn.process_data_events(0.05), what="return")

    got, nacked = [], []

    def on_message(c, m, p, body):
        if not nacked:
            nacked.append(body)
            c.basic_nack(m.delivery_tag, requeue=True)
            return
        got.append(body)
        c.basic_ack(m.delivery_tag)

    ch.basic_qos(prefetch_count=1)
    tag = ch.basic_consume(manual, on_message)
    wait_until(lambda: len(got) == 3, step=lambda: conn.process_data_events(0.05),
               what="3 manual-ack deliveries")
    ch.basic_cancel(tag)
    taken = []
    tag = ch.basic_consume(auto, lambda c, m, p, body: taken.append(body), auto_ack=True)
    wait_until(lambda: len(taken) == 2, step=lambda: conn.process_data_events(0.05),
               what="2 auto-ack deliveries")
    ch.basic_cancel(tag)
    method, _, _ = ch.basic_get(gets, auto_ack=False)
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get(gets, auto_ack=True)[0] is not None
    assert ch.basic_get(gets)[0] is None          # get-empty
    conn.close()


EXPECTED = {"received": 10, "received_confirm": 9, "routed": 7, "dropped": 2, "returned": 1,
            "confirmed": 9, "delivered": 4 + 2 + 2, "consume_manual": 4, "consume_auto": 2,
            "get_manual": 1, "get_auto": 1, "get_empty": 1, "redelivered": 1, "acked": 4}


def test_global_counters_move_exactly_by_what_clients_did(broker):
    before = global_counts(scrape(broker))
    assert set(before.values()) == {0}
    work_with_pika(broker, "metrics-q")
    # acks travel without an answer: wait until the last one is counted, then compare all
    wait_until(lambda: global_counts(scrape(broker))["acked"] == 4, what="4 acks counted")
    samples = scrape(broker)
    assert global_counts(samples) == EXPECTED
    assert value(samples, "rabbitmq_queue_messages_published_total") == 7
    assert value(samples, "rabbitmq_queue_messages") == 0
    assert value(samples, "rabbitmq_queues") == 3
    assert value(samples, "rabbitmq_connections_opened_total") == 1
    assert value(samples, "rabbitmq_connections_closed_total") == 1
    assert value(samples, "rabbitmq_channels_opened_total") == 2
    assert value(samples, "rabbitmq_channels_closed_total") == 2
    assert value(samples, "rabbitmq_queues_declared_total") == 3
    assert value(samples, "rabbitmq_queues_created_total") == 3
    assert value(samples, "rabbitmq_connections") == 0
    # one AMQP login (work_with_pika's), each the management API's auth_attempt_metrics too
    assert (value(samples, "rabbitmq_auth_attempts_total", **AMQP),
            value(samples, "rabbitmq_auth_attempts_succeeded_total", **AMQP),
            value(samples, "rabbitmq_auth_attempts_failed_total", **AMQP)) == (1, 1, 0)
    detailed = scrape(broker, "/metrics/detailed?family=auth_attempt_metrics")
    assert value(detailed, "rabbitmq_detailed_auth_attempts_total", **AMQP) == 1
    # message sizes: 10 publishes of at most 100 bytes (RabbitMQ's buckets)
    assert value(samples, "rabbitmq_message_size_bytes_bucket", le="100.0", **AMQP) == 10
    assert value(samples, "rabbitmq_message_size_bytes_count", **AMQP) == 10
    assert value(samples, "rabbitmq_message_size_bytes_sum", **AMQP) == \
        sum(len(b"m%d" % i) for i in range(7)) + 2 * len(b"dropped") + len(b"returned")


def test_publishes_counted_per_read_are_exact_open_and_at_close(broker):
    """Publishes are counted per read, not per message (amqpbroker/stats): a burst that
    switches exchange and size bucket on every message is counted exactly while its channel
    is still open, and so is one whose connection closes in the same breath."""
    q = "batch-q"
    small, large = b"s" * 10, b"L" * 5000
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(q)
    for i in range(40):                     # no confirms: the frames go out back to back
        ch.basic_publish("", q, small if i % 2 else large)
        ch.basic_publish("amq.fanout", "", small)          # no binding: dropped
    wait_until(lambda: value(scrape(broker), "rabbitmq_queue_messages_ready") == 40,
               what="40 messages in the queue")
    counts = global_counts(scrape(broker))
    assert (counts["received"], counts["routed"], counts["dropped"]) == (80, 40, 40)
    closing = pika.BlockingConnection(pika.URLParameters(broker.url))
    cch = closing.channel()
    for _ in range(25):
        cch.basic_publish("", q, small)
    closing.close()                         # publishes and close in one go
    wait_until(lambda: value(scrape(broker), "rabbitmq_queue_messages_ready") == 65,
               what="65 messages in the queue")
    samples = scrape(broker)
    counts = global_counts(samples)
    assert (counts["received"], counts["routed"], counts["dropped"]) == (105, 65, 40)
    assert value(samples, "rabbitmq_queue_messages_published_total") == 65
    bucket = "rabbitmq_message_size_bytes_bucket"
    assert value(samples, bucket, le="100.0", **AMQP) == 20 + 40 + 25
    assert value(samples, bucket, le="1000.0", **AMQP) == 85
    assert value(samples, bucket, le="10000.0", **AMQP) == 105
    assert value(samples, "rabbitmq_message_size_bytes_sum", **AMQP) == \
        85 * len(small) + 20 * len(large)
    conn.close()


def test_queue_gauges_per_object_and_detailed(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    for q, n in (("gauge-a", 3), ("gauge-b", 5)):
        ch.queue_declare(q)
        for _ in range(n):
            ch.basic_publish("", q, b"x" * 100)
    method, _, _ = ch.basic_get("gauge-b", auto_ack=False)       # one unacked
    samples = scrape(broker, "/metrics/per-object")
    q = {"vhost": "/", "queue": "gauge-a"}
    assert value(samples, "rabbitmq_queue_messages_ready", **q) == 3
    assert value(samples, "rabbitmq_queue_messages_bytes", **q) == 300
    qb = {"vhost": "/", "queue": "gauge-b"}
    assert value(samples, "rabbitmq_queue_messages_ready", **qb) == 4
    assert value(samples, "rabbitmq_queue_messages_unacked", **qb) == 1
    assert value(samples, "rabbitmq_queue_messages", **qb) == 5
    assert value(samples, "rabbitmq_queue_messages_unacked_bytes", **qb) == 100
    assert value(samples, "rabbitmq_queue_messages_published_total", **qb) == 5
    channel = [dict(k[1]) for k in samples if k[0] == "rabbitmq_channel_messages_unacked"]
    assert len(channel) == 1
    assert value(samples, "rabbitmq_channel_messages_unacked", **channel[0]) == 1
    assert value(samples, "rabbitmq_channel_messages_published_total",
                 vhost="/", **channel[0]) == 8
    # aggregated: the sums, no per-object labels
    agg = scrape(broker)
    assert value(agg, "rabbitmq_queue_messages_ready") == 7
    assert value(agg, "rabbitmq_queue_messages_unacked") == 1
    assert value(agg, "rabbitmq_connections") == 1
    assert value(agg, "rabbitmq_channels") == 1
    # detailed: only the families asked for, rabbitmq_detailed_*, only the vhost asked for
    det = scrape(broker, "/metrics/detailed?family=queue_coarse_metrics&vhost=%2F")
    names = {k[0] for k in det}
    assert "rabbitmq_detailed_queue_messages_ready" in names
    assert "rabbitmq_detailed_queue_consumers" not in names
    assert "rabbitmq_queue_messages_ready" not in names
    assert value(det, "rabbitmq_detailed_queue_messages", **qb) == 5
    other = scrape(broker, "/metrics/detailed?family=queue_coarse_metrics&vhost=other")
    assert not [k for k in other if k[0] == "rabbitmq_detailed_queue_messages"]
    ch.basic_ack(method.delivery_tag)
    conn.close()


def api(b: BrokerProcess, path: str):
    return b.api(path)


def test_management_message_stats_with_rates(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("stats-q")
    ch.exchange_declare("stats-x", "fanout")
    ch.queue_bind("stats-q", "stats-x")
    for _ in range(20):
        ch.basic_publish("stats-x", "", b"hello")
    # sampled every 200 ms here (RabbitMQ: 5 s): wait for a sample that has them
    q = wait_until(lambda: (api(broker, "queues/%2F/stats-q").get("message_stats") or {})
                   .get("publish") == 20 and api(broker, "queues/%2F/stats-q"),
                   what="queue message_stats")
    ms = q["message_stats"]
    assert ms["publish_details"]["rate"] >= 0
    assert ms["deliver_get"] == 0
    ex = api(broker, "exchanges/%2F/stats-x")["message_stats"]
    assert (ex["publish_in"], ex["publish_out"]) == (20, 20)
    assert "rate" in ex["publish_in_details"]
    overview = api(broker, "overview")
    assert overview["message_stats"]["publish"] == 20
    assert overview["message_stats"]["confirm"] == 20
    assert overview["object_totals"]["channels"] == 1
    assert overview["queue_totals"]["messages"] == 20
    conns = api(broker, "connections")
    assert len(conns) == 1 and conns[0]["recv_oct"] > 20 * len(b"hello")
    assert "rate" in conns[0]["recv_oct_details"]
    # a rate: publishing during two samples gives a publish rate above zero
    def rate_seen():
        for _ in range(5):
            ch.basic_publish("stats-x", "", b"again")
        stats = api(broker, "queues/%2F/stats-q")["message_stats"]
        return stats["publish_details"]["rate"] > 0
    wait_until(rate_seen, what="a publish rate above 0")
    conn.close()


def dead_lettered(samples: dict) -> dict:
    """{(reason, queue type, strategy): count} of the non-zero dead-letter counters."""
    out = {}
    for (name, labels), v in samples.items():
        if name.startswith("rabbitmq_global_messages_dead_lettered_") and v:
            labels = dict(labels)
            reason = name[len("rabbitmq_global_messages_dead_lettered_"):-len("_total")]
            out[(reason, labels["queue_type"], labels["dead_letter_strategy"])] = v
    return out


def test_dead_letter_counters_by_reason_queue_type_and_strategy(broker):
    """RabbitMQ 3.10's rabbit_global_counters: every message that dies counts, with no
    dead-letter exchange too (``disabled``); a quorum queue's at-least-once letters count
    when they die and again once confirmed."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dl-x", "fanout")
    ch.queue_declare("dl-target")
    ch.queue_bind("dl-target", "dl-x")
    queues = {"dl-plain": {},
              "dl-short": {"x-max-length": 1, "x-dead-letter-exchange": "dl-x"},
              "dl-limit": {"x-queue-type": "quorum", "x-delivery-limit": 0},
              "dl-held": {"x-queue-type": "quorum", "x-dead-letter-exchange": "dl-x",
                          "x-dead-letter-strategy": "at-least-once",
                          "x-overflow": "reject-publish"}}
    for name, arguments in queues.items():
        ch.queue_declare(name, durable=True, arguments=arguments)
    for name in ("dl-plain", "dl-short", "dl-short", "dl-limit", "dl-held"):
        ch.basic_publish("", name, b"m")
    for name, requeue in (("dl-plain", False), ("dl-limit", True), ("dl-held", False)):
        method, _, _ = ch.basic_get(name)
        ch.basic_reject(method.delivery_tag, requeue=requeue)
    want = {("rejected", "rabbit_classic_queue", "disabled"): 1,
            ("maxlen", "rabbit_classic_queue", "at_most_once"): 1,
            ("delivery_limit", "rabbit_quorum_queue", "disabled"): 1,
            ("rejected", "rabbit_quorum_queue", "at_least_once"): 1,
            ("confirmed", "rabbit_quorum_queue", "at_least_once"): 1}
    wait_until(lambda: dead_lettered(scrape(broker)) == want, timeout=10,
               what="the dead-letter counters")
    samples = scrape(broker)
    # every sample RabbitMQ starts with is there, at 0 when nothing died that way
    assert value(samples, "rabbitmq_global_messages_dead_lettered_expired_total",
                 queue_type="rabbit_quorum_queue", dead_letter_strategy="at_least_once") == 0
    assert ("rabbitmq_global_messages_dead_lettered_confirmed_total", frozenset(
        {"queue_type": "rabbit_classic_queue", "dead_letter_strategy": "disabled"}.items())) \
        not in samples
    assert ch.queue_declare("dl-target", passive=True).method.message_count == 2
    conn.close()


def test_statistics_off_counts_nothing_but_serves_gauges(tmp_path):
    with BrokerProcess(tmp_path, "--collect-statistics", "none", *FAST_SAMPLES,
                       management=True, prometheus=True) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("off-q")
        for _ in range(4):
            ch.basic_publish("", "off-q", b"x")
        samples = scrape(b)
        assert global_counts(samples)["received"] == 0
        assert value(samples, "rabbitmq_queue_messages_ready") == 4
        assert "message_stats" not in b.api("queues/%2F/off-q")
        assert "message_stats" not in b.api("overview")
        conn.close()


def test_amqpbroker_families_commit_rings_and_restarts(tmp_path):
    with BrokerProcess(tmp_path, *LAYOUTS["2 workers + 2 front-ends"], prometheus=True) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("durable-q", durable=True)
        for _ in range(5):
            ch.basic_publish("", "durable-q", b"x", pika.BasicProperties(delivery_mode=2))
        conn.close()
        samples = scrape(b)
        rounds = {dict(k[1])["worker"]: v for k, v in samples.items()
                  if k[0] == "amqpbroker_commit_rounds_total"}
        assert sorted(rounds) == ["0", "1"] and sum(rounds.values()) >= 1
        fsyncs = sum(v for k, v in samples.items()
                     if k[0] == "amqpbroker_fsync_latency_seconds_count")
        assert fsyncs >= 1
        capacities = [v for k, v in samples.items() if k[0] == "amqpbroker_ring_capacity_bytes"]
        assert len(capacities) == 2 * 3 and all(c > 0 for c in capacities)  # 2 fe + sup, 2 w
        assert value(samples, "amqpbroker_worker_restarts_total", worker="0") == 0
        os.kill(b.worker_pids[0], signal.SIGKILL)
        wait_until(lambda: value(scrape(b), "amqpbroker_worker_restarts_total",
                                 worker="0") == 1, what="the restart counted")


# The metric names RabbitMQ's "RabbitMQ-Overview" dashboard queries, as
# dashboard_metric_names() reads them from rabbitmq-server commit 5b09e556da (2026-08-21),
# deps/rabbitmq_prometheus/docker/grafana/dashboards/RabbitMQ-Overview.json. Names, not
# RabbitMQ's file: the file itself is read from where it comes from whenever it is at hand
# (dashboard_json), and every name it queries then is checked too.
OVERVIEW_DASHBOARD_NAMES = {
    "rabbitmq_build_info", "rabbitmq_channels", "rabbitmq_channels_closed_total",
    "rabbitmq_channels_opened_total", "rabbitmq_connections",
    "rabbitmq_connections_closed_total", "rabbitmq_connections_opened_total",
    "rabbitmq_disk_space_available_bytes", "rabbitmq_disk_space_available_limit_bytes",
    "rabbitmq_erlang_uptime_seconds", "rabbitmq_global_consumers",
    "rabbitmq_global_messages_acknowledged_total", "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_consume_auto_ack_total",
    "rabbitmq_global_messages_delivered_consume_manual_ack_total",
    "rabbitmq_global_messages_delivered_get_auto_ack_total",
    "rabbitmq_global_messages_delivered_get_manual_ack_total",
    "rabbitmq_global_messages_delivered_total", "rabbitmq_global_messages_get_empty_total",
    "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_global_messages_received_total", "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total", "rabbitmq_global_publishers",
    "rabbitmq_identity_info", "rabbitmq_message_size_bytes_bucket",
    "rabbitmq_message_size_bytes_count", "rabbitmq_message_size_bytes_sum",
    "rabbitmq_process_max_fds", "rabbitmq_process_open_fds",
    "rabbitmq_process_resident_memory_bytes", "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked", "rabbitmq_queues", "rabbitmq_queues_created_total",
    "rabbitmq_queues_declared_total", "rabbitmq_queues_deleted_total",
    "rabbitmq_resident_memory_limit_bytes"}
DASHBOARD_IN_REPO = "deps/rabbitmq_prometheus/docker/grafana/dashboards/RabbitMQ-Overview.json"


def dashboard_json() -> bytes | None:
    """RabbitMQ's RabbitMQ-Overview dashboard from where it comes from: the file
    AMQPBROKER_GRAFANA_DASHBOARD names, else a mirror of the rabbitmq-server repository
    (``.mirror/rabbitmq+rabbitmq-server/repo``, a bare clone, beside the checkout or above
    it); None when neither is here."""
    if "AMQPBROKER_GRAFANA_DASHBOARD" in os.environ:
        with open(os.environ["AMQPBROKER_GRAFANA_DASHBOARD"], "rb") as f:
            return f.read()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for parent in (os.path.dirname(repo), os.path.dirname(os.path.dirname(repo))):
        mirror = os.path.join(parent, ".mirror", "rabbitmq+rabbitmq-server", "repo")
        if os.path.isdir(mirror):
            out = subprocess.run(["git", f"--git-dir={mirror}", "show",
                                  f"HEAD:{DASHBOARD_IN_REPO}"], capture_output=True)
            if out.returncode == 0:
                return out.stdout
    return None


def dashboard_metric_names(dashboard: dict) -> set[str]:
    """The metric names the dashboard's PromQL queries read (not its label names)."""
    import re
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(dashboard)
    names = set()
    for e in exprs:
        e = re.sub(r"\{[^}]*\}", "", e)                                   # label matchers
        e = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
        e = re.sub(r"label_values\(([^,)]*),[^)]*\)", r"\1", e)          # (metric, label)
        names |= set(re.findall(r"\b(?:rabbitmq|erlang)_[a-z_]+\b", e))
    return names


def test_every_metric_of_rabbitmqs_overview_dashboard_is_served(tmp_path):
    import json
    wanted = set(OVERVIEW_DASHBOARD_NAMES)
    raw = dashboard_json()
    if raw is not None:                     # the dashboard as it is now: its names too
        dashboard = json.loads(raw)
        assert dashboard["title"] == "RabbitMQ-Overview"
        wanted |= dashboard_metric_names(dashboard)
    with BrokerProcess(tmp_path, prometheus=True) as b:
        served = {name for name, _ in scrape(b)}
    assert sorted(wanted - served) == []


def test_consumer_group_lag_in_kafka_exporters_names(broker):
    """kafka_exporter's families for a group that read 10 messages of a stream and left
    before 5 more came: its lag stays visible with no member (kafka_exporter #226)."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("lag-stream", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(10):
        ch.basic_publish("", "lag-stream", f"m{i}".encode())
    got = []
    ch.basic_qos(prefetch_count=100)
    ch.basic_consume("lag-stream",
                     lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)),
                     arguments={"x-consumer-group": "billing", "x-stream-offset": "first"})
    wait_until(lambda: len(got) == 10, step=lambda: conn.process_data_events(0.05),
               what="10 deliveries")
    labels = {"vhost": "/", "consumergroup": "billing", "topic": "lag-stream", "partition": "0"}
    wait_until(lambda: value(scrape(broker), "kafka_consumergroup_current_offset",
                             **labels) == 10, what="the acks committed")
    conn.close()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "lag-stream", f"n{i}".encode())

    def members_gone_and_lag_5():
        s = scrape(broker)
        return (value(s, "kafka_consumergroup_members", vhost="/", consumergroup="billing") == 0
                and value(s, "kafka_consumergroup_lag", **labels) == 5)
    wait_until(members_gone_and_lag_5, what="lag 5 with no member")
    samples = scrape(broker)
    where = {"vhost": "/", "topic": "lag-stream", "partition": "0"}
    assert value(samples, "kafka_topic_partition_current_offset", **where) == 15
    assert value(samples, "kafka_topic_partition_oldest_offset", **where) == 0
    assert value(samples, "kafka_consumergroup_current_offset", **labels) == 10
    ch.queue_delete("lag-stream")
    conn.close()


def test_a_group_commit_removed_by_retention_falls_back_counted(broker):
    """A group's committed offset that retention deleted: the group resumes at the log start,
    and the fallback is counted (amqpbroker_group_offset_fallbacks_total)."""
    def fallbacks():
        s = scrape(broker)
        return sum(v for (name, _), v in s.items()
                   if name == "amqpbroker_group_offset_fallbacks_total")

    before = fallbacks()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("short-stream", durable=True, arguments={
        "x-queue-type": "stream", "x-stream-max-segment-size-bytes": 2000,
        "x-max-length-bytes": 6000})

    def read(n: int) -> list[int]:
        got = []
        c = conn.channel()
        c.basic_qos(prefetch_count=10)
        c.basic_consume("short-stream",
                        lambda c_, m, p, b: (got.append(p.headers["x-stream-offset"]),
                                             c_.basic_ack(m.delivery_tag)),
                        arguments={"x-consumer-group": "slow", "x-stream-offset": "first"})
        wait_until(lambda: len(got) >= n, step=lambda: conn.process_data_events(0.05),
                   what=f"{n} deliveries")
        c.close()
        return got

    for i in range(3):
        ch.basic_publish("", "short-stream", b"x" * 200)
    assert read(3)[:3] == [0, 1, 2]
    wait_until(lambda: value(scrape(broker), "kafka_consumergroup_current_offset", vhost="/",
                             consumergroup="slow", topic="short-stream", partition="0") == 3,
               what="the commit")
    for i in range(120):                       # far past x-max-length-bytes: old segments go
        ch.basic_publish("", "short-stream", b"y" * 200)
    start = lambda: value(scrape(broker), "kafka_topic_partition_oldest_offset", vhost="/",
                          topic="short-stream", partition="0")
    wait_until(lambda: start() > 3, what="retention past the commit")
    first = read(1)[0]
    assert first > 3 and first >= start() - 50      # resumed at the log start, not at 3
    wait_until(lambda: fallbacks() > before, what="the fallbacks counted")   # one a removal
    ch.queue_delete("short-stream")
    conn.close()


def test_the_cluster_name_set_through_the_api_is_the_identity_label(broker):
    """Grafana's RabbitMQ dashboards tell brokers apart by ``rabbitmq_cluster`` of
    ``rabbitmq_identity_info``: the name ``PUT /api/cluster-name`` set, in both layouts."""
    assert broker.request("PUT", "cluster-name", {"name": "metrics-named"})[0] == 204
    identity = [dict(labels) for (name, labels) in scrape(broker)
                if name == "rabbitmq_identity_info"]
    assert [i["rabbitmq_cluster"] for i in identity] == ["metrics-named"]
