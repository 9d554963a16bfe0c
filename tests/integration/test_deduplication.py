"""The RabbitMQ message-deduplication plugin's interface, with pika, in both process layouts:
the queue argument ``x-message-deduplication`` (a publish whose key is held by a message in the
queue is confirmed and dropped) and the exchange type ``x-message-deduplication`` (a key seen
within ``x-cache-ttl``, among the last ``x-cache-size``, is not routed), with the plugin's
argument checks and reply texts. The key: header ``x-deduplication-header``, else the
``message_id`` property."""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks
from amqpbroker.testing.mgmt_client import ManagementClient
from interop.conftest import bodies

DEDUP = "x-message-deduplication"


def keyed(key=None, message_id=None, ttl=None) -> pika.BasicProperties:
    headers = {}
    if key is not None:
        headers["x-deduplication-header"] = key
    if ttl is not None:
        headers["x-cache-ttl"] = ttl
    return pika.BasicProperties(delivery_mode=2, headers=headers or None,
                                message_id=message_id)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("dedup"), *LAYOUTS[request.param]) as b:
        yield b


@pytest.fixture
def conn(broker):
    c = pika.BlockingConnection(pika.URLParameters(broker.url))
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn, request):
    channel = conn.channel()
    channel.confirm_delivery()
    channel.prefix = "dd-" + request.node.name.replace("[", "-").rstrip("]").replace(" ", "_")
    created = []
    channel.created = created
    yield channel
    cleanup = conn.channel() if conn.is_open else None
    for kind, name in created:
        if cleanup is not None:
            (cleanup.queue_delete if kind == "q" else cleanup.exchange_delete)(name)


def dedup_queue(ch, suffix="q", value=True, durable=True) -> str:
    name = f"{ch.prefix}-{suffix}"
    ch.queue_declare(name, durable=durable, arguments={DEDUP: value})
    ch.created.append(("q", name))
    return name


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


# ------------------------------------------------------------------------- queue level
def test_a_key_in_the_queue_drops_the_publish_with_a_confirm(ch):
    q = dedup_queue(ch)
    ch.basic_publish("", q, b"first", keyed("k1"))
    ch.basic_publish("", q, b"again", keyed("k1"))          # acked (no NackError), dropped
    ch.basic_publish("", q, b"other", keyed("k2"))
    ch.basic_publish("", q, b"by id", keyed(message_id="id-1"))
    ch.basic_publish("", q, b"by id again", keyed(message_id="id-1"))
    ch.basic_publish("", q, b"header wins", keyed("k2", message_id="id-2"))
    ch.basic_publish("", q, b"no key", keyed())
    ch.basic_publish("", q, b"no key", keyed())
    assert bodies(ch, q) == [b"first", b"other", b"by id", b"no key", b"no key"]


def test_the_key_is_held_until_the_message_is_acked(ch):
    q = dedup_queue(ch)
    ch.basic_publish("", q, b"one", keyed("k"))
    method, _, _ = ch.basic_get(q, auto_ack=False)            # unacked: still in the queue
    ch.basic_publish("", q, b"dup while unacked", keyed("k"))
    assert count(ch, q) == 0
    ch.basic_nack(method.delivery_tag, requeue=True)          # back, still holding the key
    ch.basic_publish("", q, b"dup while requeued", keyed("k"))
    assert count(ch, q) == 1
    method, _, body = ch.basic_get(q, auto_ack=False)
    assert body == b"one"
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", q, b"two", keyed("k"))               # gone: the key is free
    assert ch.basic_get(q, auto_ack=True)[2] == b"two"


def test_purge_and_expiry_free_the_keys(ch):
    q = dedup_queue(ch)
    ch.basic_publish("", q, b"a", keyed("k"))
    ch.queue_purge(q)
    ch.basic_publish("", q, b"b", keyed("k"))
    assert count(ch, q) == 1
    t = f"{ch.prefix}-ttl"
    ch.queue_declare(t, arguments={DEDUP: True, "x-message-ttl": 0})
    ch.created.append(("q", t))
    ch.basic_publish("", t, b"expires at once", keyed("k"))
    ch.basic_publish("", t, b"so this is no duplicate", keyed("k"))
    assert count(ch, t) == 0


def test_deduplication_off_unless_the_argument_says_so(ch):
    off = dedup_queue(ch, "off", value=False)
    plain = f"{ch.prefix}-plain"
    ch.queue_declare(plain)
    ch.created.append(("q", plain))
    for q in (off, plain):
        ch.basic_publish("", q, b"x", keyed("k"))
        ch.basic_publish("", q, b"x", keyed("k"))
        assert count(ch, q) == 2


def test_queue_keys_are_rebuilt_after_a_restart(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "2") as b:
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = c.channel()
        ch.confirm_delivery()
        ch.queue_declare("dq", durable=True, arguments={DEDUP: True})
        ch.basic_publish("", "dq", b"kept", keyed("k"))
        c.close()
        b.kill()
        b.start()
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = c.channel()
        ch.confirm_delivery()
        ch.basic_publish("", "dq", b"dup after restart", keyed("k"))
        assert ch.basic_get("dq", auto_ack=True)[2] == b"kept"
        assert ch.basic_get("dq", auto_ack=True)[0] is None
        c.close()


# ------------------------------------------------------------------------- exchange type
def dedup_exchange(ch, suffix="x", queues=2, **arguments) -> tuple[str, list]:
    name = f"{ch.prefix}-{suffix}"
    ch.exchange_declare(name, DEDUP, arguments=arguments)
    ch.created.append(("x", name))
    bound = []
    for i in range(queues):
        q = f"{name}-{i}"
        ch.queue_declare(q)
        ch.created.append(("q", q))
        ch.queue_bind(q, name, routing_key=f"key-{i}")
        bound.append(q)
    return name, bound


def test_the_exchange_routes_as_fanout_and_drops_seen_keys(ch):
    x, (q0, q1) = dedup_exchange(ch, **{"x-cache-size": 10})
    ch.basic_publish(x, "any key", b"a", keyed("k1"))
    ch.basic_publish(x, "", b"a again", keyed("k1"))          # confirmed, routed nowhere
    ch.basic_publish(x, "", b"b", keyed(message_id="m1"))
    ch.basic_publish(x, "", b"b again", keyed(message_id="m1"))
    ch.basic_publish(x, "", b"c", keyed())
    ch.basic_publish(x, "", b"c", keyed())
    with pytest.raises(pika.exceptions.UnroutableError):      # a duplicate is unroutable
        ch.basic_publish(x, "", b"a mandatory", keyed("k1"), mandatory=True)
    for q in (q0, q1):
        assert count(ch, q) == 4


def test_the_exchange_catches_duplicates_that_come_through_other_front_ends(tmp_path):
    """A producer that reconnects may land on another front-end process: the exchange's one
    cache (the metadata owner's) still sees its retry as a duplicate, in a transaction too."""
    with BrokerProcess(tmp_path, "--workers", "2", "--frontends", "2", management=True) as b:
        api = ManagementClient(f"http://127.0.0.1:{b.management_port}")
        conns, on = [], {}
        try:
            for i in range(100):                    # a connection on each front-end
                params = pika.URLParameters(b.url)
                params.client_properties = {"connection_name": f"producer-{i}"}
                conns.append(pika.BlockingConnection(params))
                listed = api.request("GET", "/api/connections", "guest", "guest")[1]
                for c in listed:
                    name = c["client_properties"].get("connection_name", "")
                    on.setdefault(c["frontend"], int(name.split("-")[1]))
                if len(on) == 2:
                    break
            assert len(on) == 2
            first, second = (conns[on[f]].channel() for f in sorted(on))
            tx = conns[on[max(on)]].channel()     # the second front-end, in tx mode
            for ch in (first, second):
                ch.confirm_delivery()
            first.exchange_declare("dd-x", DEDUP, arguments={"x-cache-size": 100})
            first.queue_declare("dd-x-q")
            first.queue_bind("dd-x-q", "dd-x")
            first.basic_publish("dd-x", "", b"a", keyed("k1"))
            second.basic_publish("dd-x", "", b"a retried", keyed("k1"))
            first.basic_publish("dd-x", "", b"b", keyed(message_id="m1"))
            second.basic_publish("dd-x", "", b"b retried", keyed(message_id="m1"))
            second.basic_publish("dd-x", "", b"c", keyed("k2"))
            tx.tx_select()
            tx.basic_publish("dd-x", "", b"c retried in a transaction", keyed("k2"))
            tx.basic_publish("dd-x", "", b"d in a transaction", keyed("k3"))
            tx.tx_commit()
            assert bodies(first, "dd-x-q") == [b"a", b"b", b"c", b"d in a transaction"]
        finally:
            for c in conns:
                if c.is_open:
                    c.close()


def test_cache_size_evicts_the_oldest_key(ch):
    x, (q,) = dedup_exchange(ch, queues=1, **{"x-cache-size": 2})
    for key in ("a", "b", "c", "a"):           # c pushes a out: a is routed again
        ch.basic_publish(x, "", key.encode(), keyed(key))
    ch.basic_publish(x, "", b"c", keyed("c"))
    assert count(ch, q) == 4


def test_cache_ttl_of_the_exchange_and_of_the_message(ch):
    x, (q,) = dedup_exchange(ch, queues=1, **{"x-cache-size": 10, "x-cache-ttl": 200})
    ch.basic_publish(x, "", b"1", keyed("short"))
    ch.basic_publish(x, "", b"long", keyed("long", ttl=3_600_000))

    def routed_again():
        ch.basic_publish(x, "", b"2", keyed("short"))
        return count(ch, q) == 3
    leaks.wait_until(routed_again, timeout=10, what="the key's TTL to pass")
    ch.basic_publish(x, "", b"long again", keyed("long"))     # its own TTL: an hour
    assert count(ch, q) == 3


@pytest.mark.parametrize("arguments, text", [
    ({}, "Missing or invalid argument, " + " " * 10
         + "'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": 0}, "Missing or invalid argument, " + " " * 10
         + "'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": "foo"}, "Missing or invalid argument, " + " " * 22
         + "'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": 5, "x-cache-ttl": -1}, "Invalid argument, " + " " * 13
         + "'x-cache-ttl' must be an integer greater than 0"),
    ({"x-cache-size": 5, "x-cache-ttl": "bar"}, "Invalid argument, " + " " * 22
         + "'x-cache-ttl' must be an integer greater than 0"),
    ({"x-cache-size": 5, "x-cache-persistence": "tape"}, "Invalid argument, " + " " * 13
         + "'x-cache-persistence' must be either 'disk' or 'memory'"),
], ids=["missing size", "zero size", "size not a number", "negative ttl", "ttl not a number",
        "persistence"])
def test_exchange_arguments_are_checked_as_the_plugin_does(conn, ch, arguments, text):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.exchange_declare(f"{ch.prefix}-bad", DEDUP, arguments=arguments)
    assert exc.value.reply_code == 406
    assert exc.value.reply_text == "PRECONDITION_FAILED - " + text


def test_exchange_arguments_as_strings_are_accepted(ch):
    x, (q,) = dedup_exchange(ch, queues=1, **{"x-cache-size": "10", "x-cache-ttl": "1000",
                                               "x-cache-persistence": "disk"})
    ch.basic_publish(x, "", b"1", keyed("k"))
    ch.basic_publish(x, "", b"1", keyed("k"))
    assert count(ch, q) == 1


def test_definitions_import_checks_the_arguments_and_the_exchange_survives_restart(tmp_path):
    from amqpbroker.testing.mgmt_client import ManagementClient
    with BrokerProcess(tmp_path, management=True) as b:
        api = ManagementClient(f"http://127.0.0.1:{b.management_port}")
        bad = {"exchanges": [{"name": "dx", "vhost": "/", "type": DEDUP, "arguments": {}}]}
        status, value, _ = api.request("POST", "/api/definitions", "guest", "guest", body=bad)
        assert (status, value) == (400, {"error": "bad_request", "reason": (
            "exchanges[0].arguments: Missing or invalid argument, " + " " * 10
            + "'x-cache-size' must be an integer greater than 0")})
        good = {"exchanges": [{"name": "dx", "vhost": "/", "type": DEDUP,
                               "arguments": {"x-cache-size": 5}}],
                "queues": [{"name": "dxq", "vhost": "/"}],
                "bindings": [{"source": "dx", "vhost": "/", "destination": "dxq",
                              "destination_type": "queue"}]}
        status, _, _ = api.request("POST", "/api/definitions", "guest", "guest", body=good)
        assert status in (200, 201, 204)
        b.restart()
        c = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = c.channel()
        ch.confirm_delivery()
        ch.basic_publish("dx", "", b"1", keyed("k"))
        ch.basic_publish("dx", "", b"2", keyed("k"))
        assert ch.queue_declare("dxq", passive=True).method.message_count == 1
        c.close()
