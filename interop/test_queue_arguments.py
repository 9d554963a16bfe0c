"""Queue arguments: TTLs, expiry, length limits and overflow, dead-lettering (x-death),
single active consumer, priorities."""
from __future__ import annotations

import datetime

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError

from .conftest import bodies, drain, wait_until


@pytest.fixture
def cch(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def declare(ch, uniq, cleanup, **arguments):
    return cleanup.queue(ch.queue_declare(uniq("q"), arguments=arguments).method.queue)


def ready(ch, q) -> int:
    return ch.queue_declare(q, passive=True).method.message_count


def dead_letter_setup(ch, uniq, cleanup, **arguments):
    """A DLX (direct) with a bound DLQ, and a source queue dead-lettering to it with key 'dlk'."""
    dlx = cleanup.exchange(uniq("dlx"))
    ch.exchange_declare(dlx, "direct")
    dlq = cleanup.queue(ch.queue_declare(uniq("dlq")).method.queue)
    ch.queue_bind(dlq, dlx, "dlk")
    src = declare(ch, uniq, cleanup, **{"x-dead-letter-exchange": dlx,
                                        "x-dead-letter-routing-key": "dlk", **arguments})
    return src, dlq, dlx


def test_message_ttl_expires_messages(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup, **{"x-message-ttl": 100})
    cch.basic_publish("", q, b"soon gone")
    cch.basic_publish("", q, b"also gone")
    wait_until(lambda: ready(cch, q) == 0, timeout=5)
    assert cch.basic_get(q)[0] is None


def test_message_ttl_zero_delivers_only_to_waiting_consumer(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup, **{"x-message-ttl": 0})
    cch.basic_publish("", q, b"nobody waiting")
    assert cch.basic_get(q)[0] is None


def test_per_message_expiration(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup)
    cch.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    cch.basic_publish("", q, b"long", pika.BasicProperties(expiration="60000"))
    wait_until(lambda: ready(cch, q) == 1, timeout=5)
    ((m, props, body),) = drain(cch, q, 1)
    assert body == b"long" and props.expiration == "60000"


def test_per_message_expiration_invalid_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    q = declare(ch, uniq, cleanup)
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="soon"))
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - invalid expiration 'soon': no_integer"


@pytest.mark.parametrize("expiration, problem", [
    ("-5", "{value_negative,-5}"),
    ("12abc", '{leftover_string,"abc"}'),
    ("400000000000", "{value_too_large,400000000000}"),
    ("", "no_integer"),
])
def test_per_message_expiration_reply_texts(conn, uniq, cleanup, expiration, problem):
    """rabbit_basic:parse_expiration's reasons, as RabbitMQ prints them."""
    ch = conn.channel()
    q = declare(ch, uniq, cleanup)
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    assert e.value.reply_code == 406
    assert e.value.reply_text == \
        f"PRECONDITION_FAILED - invalid expiration '{expiration}': {problem}"


def test_per_message_expiration_with_plus_sign_is_valid(conn, uniq, cleanup):
    ch = conn.channel()
    q = declare(ch, uniq, cleanup)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="+60000"))
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_queue_expires_when_unused(ch, uniq, mgmt):
    q = ch.queue_declare(uniq("q"), arguments={"x-expires": 200}).method.queue
    assert mgmt.get(f"/api/queues/%2F/{q}")["arguments"] == {"x-expires": 200}

    def gone():
        try:
            mgmt.get(f"/api/queues/%2F/{q}")
            return False
        except Exception as exc:
            return getattr(exc, "code", None) == 404

    # Polled through the management API: any queue.declare, even passive, counts as a use and
    # restarts the expiry timer.
    wait_until(gone, timeout=5)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, passive=True)
    assert e.value.reply_code == 404


def test_a_passive_declare_renews_the_expiry(ch, uniq, mgmt, cleanup):
    """RabbitMQ's stat (queue.declare passive) is a use: a queue polled so never expires.
    The clock: another queue with the same x-expires, unused, going."""
    idle = ch.queue_declare(uniq("idle"), arguments={"x-expires": 300}).method.queue
    polled = cleanup.queue(ch.queue_declare(uniq("polled"),
                                            arguments={"x-expires": 300}).method.queue)

    def idle_gone():
        ch.queue_declare(polled, passive=True)
        return not any(q["name"] == idle for q in mgmt.get("/api/queues/%2F?columns=name"))
    wait_until(idle_gone, timeout=10)
    assert ch.queue_declare(polled, passive=True).method.queue == polled


def test_max_length_drops_head_by_default(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup, **{"x-max-length": 2})
    for b in (b"1", b"2", b"3", b"4"):
        cch.basic_publish("", q, b)  # all confirmed (acked), the oldest dropped
    assert bodies(cch, q) == [b"3", b"4"]


def test_max_length_bytes_drops_head(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup, **{"x-max-length-bytes": 10})
    for b in (b"aaaaa", b"bbbbb", b"ccccc"):
        cch.basic_publish("", q, b)
    assert bodies(cch, q) == [b"bbbbb", b"ccccc"]


def test_overflow_reject_publish_nacks(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    cch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        cch.basic_publish("", q, b"refused")
    assert bodies(cch, q) == [b"kept"]


def test_overflow_reject_publish_dlx_nacks_and_dead_letters(cch, uniq, cleanup):
    q, dlq, dlx = dead_letter_setup(cch, uniq, cleanup, **{"x-max-length": 1,
                                                          "x-overflow": "reject-publish-dlx"})
    cch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        cch.basic_publish("", q, b"refused")
    ((m, props, body),) = drain(cch, dlq, 1)
    assert body == b"refused"
    (death,) = props.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("maxlen", q, 1)
    assert bodies(cch, q) == [b"kept"]


def test_invalid_overflow_value_is_406(conn, uniq):
    ch = conn.channel()
    q = uniq("q")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, arguments={"x-overflow": "explode"})
    assert e.value.reply_code == 406
    assert e.value.reply_text.startswith(f"PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '{q}'")


def test_dead_letter_on_reject_x_death(cch, uniq, cleanup):
    q, dlq, dlx = dead_letter_setup(cch, uniq, cleanup)
    cch.basic_publish("", q, b"bad", pika.BasicProperties(headers={"app": "h"}))
    ((m, _, _),) = drain(cch, q, 1, auto_ack=False)
    cch.basic_reject(m.delivery_tag, requeue=False)
    ((dm, props, body),) = drain(cch, dlq, 1)
    assert body == b"bad"
    assert (dm.exchange, dm.routing_key) == (dlx, "dlk")
    h = props.headers
    assert h["app"] == "h"
    (death,) = h["x-death"]
    assert isinstance(death.pop("time"), datetime.datetime)
    assert death == {"count": 1, "reason": "rejected", "queue": q, "exchange": "",
                     "routing-keys": [q]}
    assert h["x-first-death-reason"] == "rejected"
    assert h["x-first-death-queue"] == q
    assert h["x-first-death-exchange"] == ""


def test_dead_letter_on_nack_without_dl_routing_key_keeps_original_key(cch, uniq, cleanup):
    dlx = cleanup.exchange(uniq("dlx"))
    cch.exchange_declare(dlx, "fanout")
    dlq = cch.queue_declare("", exclusive=True).method.queue
    cch.queue_bind(dlq, dlx)
    q = declare(cch, uniq, cleanup, **{"x-dead-letter-exchange": dlx})
    cch.basic_publish("", q, b"n")
    ((m, _, _),) = drain(cch, q, 1, auto_ack=False)
    cch.basic_nack(m.delivery_tag, requeue=False)
    ((dm, props, _),) = drain(cch, dlq, 1)
    assert dm.routing_key == q
    assert props.headers["x-death"][0]["reason"] == "rejected"


def test_dead_letter_on_expiry(cch, uniq, cleanup):
    q, dlq, _ = dead_letter_setup(cch, uniq, cleanup, **{"x-message-ttl": 50})
    cch.basic_publish("", q, b"old")
    ((_, props, body),) = drain(cch, dlq, 1)
    (death,) = props.headers["x-death"]
    assert body == b"old"
    assert (death["reason"], death["queue"], death["count"], death["exchange"],
            death["routing-keys"]) == ("expired", q, 1, "", [q])


def test_dead_letter_on_per_message_expiry_records_original_expiration(cch, uniq, cleanup):
    q, dlq, _ = dead_letter_setup(cch, uniq, cleanup)
    cch.basic_publish("", q, b"old", pika.BasicProperties(expiration="20"))
    ((_, props, _),) = drain(cch, dlq, 1)
    (death,) = props.headers["x-death"]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "20"
    assert props.expiration is None  # removed so the dead letter does not expire again


def test_dead_letter_on_max_length(cch, uniq, cleanup):
    q, dlq, _ = dead_letter_setup(cch, uniq, cleanup, **{"x-max-length": 1})
    cch.basic_publish("", q, b"first")
    cch.basic_publish("", q, b"second")
    ((_, props, body),) = drain(cch, dlq, 1)
    assert body == b"first"
    (death,) = props.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("maxlen", q, 1)
    assert bodies(cch, q) == [b"second"]


def test_x_death_count_increments_on_cycle(cch, uniq, cleanup):
    # q1 dead-letters to q2 (via default exchange) which dead-letters back to q1 on expiry.
    q1, q2 = uniq("q1"), uniq("q2")
    cleanup.queue(q1)
    cleanup.queue(q2)
    cch.queue_declare(q1, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q2})
    cch.queue_declare(q2, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q1,
                                     "x-message-ttl": 10})
    cch.basic_publish("", q1, b"loop")
    ((m, _, _),) = drain(cch, q1, 1, auto_ack=False)
    for expected in (1, 2):
        cch.basic_reject(m.delivery_tag, requeue=False)
        # q1 -rejected-> q2 -expired-> q1
        ((m, props, _),) = drain(cch, q1, 1, auto_ack=False)
        deaths = {(d["queue"], d["reason"]): d["count"] for d in props.headers["x-death"]}
        assert deaths == {(q1, "rejected"): expected, (q2, "expired"): expected}
        # x-death is ordered most recent first.
        assert [d["queue"] for d in props.headers["x-death"]] == [q2, q1]
    cch.basic_ack(m.delivery_tag)


def test_single_active_consumer(connect, uniq, cleanup):
    conn = connect()
    ch = conn.channel()
    q = declare(ch, uniq, cleanup, **{"x-single-active-consumer": True})
    got: list[tuple[str, bytes]] = []
    chans = {}
    for name in ("a", "b"):
        c = conn.channel()
        tag = c.basic_consume(q, lambda c_, m, p, b, name=name: got.append((name, b)), auto_ack=True)
        chans[name] = (c, tag)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())

    def pump_until(n):
        wait_until(lambda: conn.process_data_events(time_limit=0.02) or len(got) >= n)

    pump_until(4)
    assert got == [("a", b"0"), ("a", b"1"), ("a", b"2"), ("a", b"3")]
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2
    c, tag = chans["a"]
    c.basic_cancel(tag)
    ch.basic_publish("", q, b"4")
    pump_until(5)
    assert got[-1] == ("b", b"4")


def test_max_priority_ordering(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup, **{"x-max-priority": 10})
    for prio in (1, 5, None, 9, 5, 0, 20):
        props = pika.BasicProperties(priority=prio) if prio is not None else pika.BasicProperties()
        cch.basic_publish("", q, str(prio).encode(), props)
    # Highest first, FIFO within a priority; no priority = 0; above the max counts as the max (10).
    assert bodies(cch, q) == [b"20", b"9", b"5", b"5", b"1", b"None", b"0"]


def test_priority_ignored_without_max_priority(cch, uniq, cleanup):
    q = declare(cch, uniq, cleanup)
    for prio in (1, 9, 5):
        cch.basic_publish("", q, str(prio).encode(), pika.BasicProperties(priority=prio))
    assert bodies(cch, q) == [b"1", b"9", b"5"]


@pytest.mark.parametrize("key, value, reason", [
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", "soon", '"expected integer, got longstr"'),
    ("x-message-ttl", 400000000000, "{value_too_large,400000000000}"),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", True, '"expected integer, got bool"'),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
    ("x-overflow", "nope", "invalid_overflow"),
    ("x-dead-letter-routing-key", "k", "routing_key_but_no_dlx_defined"),
    ("x-single-active-consumer", "yes", "{unacceptable_type,longstr}"),
    ("x-queue-mode", "fast", "\"unsupported queue mode 'fast'\""),
])
def test_invalid_argument_reply_texts(conn, uniq, key, value, reason):
    """rabbit_amqqueue's declare_args validators, worded as RabbitMQ prints them (~p)."""
    ch = conn.channel()
    q = uniq("q")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, arguments={key: value})
    assert e.value.reply_code == 406
    assert e.value.reply_text == \
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {reason}"
