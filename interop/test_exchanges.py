"""Exchanges: types and routing, predeclared exchanges, declare/delete errors, e2e bindings,
alternate exchanges, internal exchanges, CC/BCC sender-selected distribution.

Routing tests publish on a confirm channel: once the publish is confirmed the message is in every
queue it was routed to, so a following basic.get proves presence *and* absence.
"""
from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from .conftest import bodies, drain, wait_until
from .conftest import q as quoted


@pytest.fixture
def cch(conn):
    """A channel in confirm mode."""
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def queues(ch, n):
    return [ch.queue_declare("", exclusive=True).method.queue for _ in range(n)]


def test_direct_exact_match_only(cch, uniq, cleanup):
    ex = cleanup.exchange(uniq("direct"))
    cch.exchange_declare(ex, "direct")
    a, b = queues(cch, 2)
    cch.queue_bind(a, ex, "k")
    cch.queue_bind(b, ex, "k")
    cch.queue_bind(b, ex, "other")
    for key in ("k", "other", "K", "k.x", ""):
        cch.basic_publish(ex, key, key.encode())
    assert bodies(cch, a) == [b"k"]
    assert bodies(cch, b) == [b"k", b"other"]


def test_fanout_ignores_routing_key(cch, uniq, cleanup):
    ex = cleanup.exchange(uniq("fanout"))
    cch.exchange_declare(ex, "fanout")
    a, b = queues(cch, 2)
    cch.queue_bind(a, ex, "x")
    cch.queue_bind(b, ex, "")
    cch.basic_publish(ex, "anything", b"1")
    assert bodies(cch, a) == [b"1"] and bodies(cch, b) == [b"1"]


@pytest.mark.parametrize("pattern,matches,misses", [
    ("#", ["", "a", "a.b.c"], []),
    ("*", ["a"], ["a.b", ""]),  # RabbitMQ: '*' does not match the empty routing key ...
    ("a.*", ["a.b", "a."], ["a", "a.b.c", "b.a"]),  # ... but does match an empty word after a dot
    ("a.#", ["a", "a.b", "a.b.c"], ["b", "ab"]),
    ("#.c", ["c", "a.c", "a.b.c"], ["c.a"]),
    ("a.#.c", ["a.c", "a.b.c", "a.b.b.c"], ["a.b", "b.c"]),
    ("*.*", ["a.b"], ["a", "a.b.c"]),
    ("a.*.#", ["a.b", "a.b.c"], ["a"]),
    ("a.b", ["a.b"], ["a.b.c", "a", "a.bb"]),
])
def test_topic_wildcards(cch, uniq, cleanup, pattern, matches, misses):
    ex = cleanup.exchange(uniq("topic"))
    cch.exchange_declare(ex, "topic")
    (q,) = queues(cch, 1)
    cch.queue_bind(q, ex, pattern)
    for key in matches + misses:
        cch.basic_publish(ex, key, key.encode())
    assert bodies(cch, q) == [k.encode() for k in matches]


HEADER_MSGS = [
    {"format": "pdf", "type": "report"},
    {"format": "pdf"},
    {"format": "zip", "type": "report"},
    {"format": "pdf", "type": "report", "x-extra": "1"},
    {"x-tag": "v", "format": "pdf"},
    {},
]


@pytest.mark.parametrize("x_match,args,want", [
    ("all", {"format": "pdf", "type": "report"}, [0, 3]),
    ("any", {"format": "pdf", "type": "report"}, [0, 1, 2, 3, 4]),
    # 'all'/'any' ignore binding arguments starting with 'x-' ...
    ("all", {"format": "pdf", "x-tag": "v"}, [0, 1, 3, 4]),
    ("any", {"format": "zip", "x-tag": "v"}, [2]),
    # ... the '-with-x' variants (RabbitMQ 3.10+) match them too.
    ("all-with-x", {"format": "pdf", "x-tag": "v"}, [4]),
    ("any-with-x", {"format": "zip", "x-tag": "v"}, [2, 4]),
])
def test_headers_exchange(cch, uniq, cleanup, x_match, args, want):
    ex = cleanup.exchange(uniq("headers"))
    cch.exchange_declare(ex, "headers")
    (q,) = queues(cch, 1)
    cch.queue_bind(q, ex, "", arguments={"x-match": x_match, **args})
    for i, headers in enumerate(HEADER_MSGS):
        cch.basic_publish(ex, "rk-ignored", str(i).encode(), pika.BasicProperties(headers=headers))
    assert bodies(cch, q) == [str(i).encode() for i in want]


def test_headers_default_x_match_is_all_and_value_types(cch, uniq, cleanup):
    ex = cleanup.exchange(uniq("headers"))
    cch.exchange_declare(ex, "headers")
    (q,) = queues(cch, 1)
    cch.queue_bind(q, ex, "", arguments={"n": 1, "s": "x"})
    cch.basic_publish(ex, "", b"match", pika.BasicProperties(headers={"n": 1, "s": "x"}))
    cch.basic_publish(ex, "", b"string-1", pika.BasicProperties(headers={"n": "1", "s": "x"}))
    cch.basic_publish(ex, "", b"one", pika.BasicProperties(headers={"n": 1}))
    assert bodies(cch, q) == [b"match"]


@pytest.mark.parametrize("name,kind", [
    ("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
    ("amq.headers", "headers"), ("amq.match", "headers"), ("amq.rabbitmq.trace", "topic"),
])
def test_predeclared_exchanges_exist(ch, name, kind, mgmt):
    assert ch.exchange_declare(name, passive=True).method.NAME == "Exchange.DeclareOk"
    info = mgmt.get(f"/api/exchanges/%2F/{name}")
    assert info["type"] == kind and info["durable"] is True


def test_predeclared_redeclare_same_is_ok_but_different_is_refused(conn):
    ch = conn.channel()
    ch.exchange_declare("amq.direct", "direct", durable=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("amq.direct", "fanout", durable=True)
    # The equivalence check comes first: 406, not the 403 of the reserved 'amq.' prefix.
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
                                  "'amq.direct' in vhost '/': received 'fanout' but current is 'direct'")


def test_default_exchange_routes_by_queue_name(cch, uniq):
    (q,) = queues(cch, 1)
    cch.basic_publish("", q, b"direct to queue")
    cch.basic_publish("", q + "-nope", b"lost")
    assert bodies(cch, q) == [b"direct to queue"]


def test_default_exchange_cannot_be_bound(conn, uniq):
    ch = conn.channel()
    (q,) = queues(ch, 1)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind(q, "", "k")
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_default_exchange_cannot_be_deleted(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_delete("")
    assert e.value.reply_code == 403


def test_passive_declare_missing_is_404(conn, uniq):
    ch = conn.channel()
    name = uniq("missing")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, passive=True)
    assert e.value.reply_code == 404
    assert e.value.reply_text == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
    assert conn.is_open  # a channel error, not a connection error


def test_redeclare_with_different_type_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    name = cleanup.exchange(uniq("x"))
    ch.exchange_declare(name, "direct")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, "fanout")
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' "
                                  "in vhost '/': received 'fanout' but current is 'direct'")


def test_redeclare_with_different_durable_is_406(conn, uniq, cleanup):
    ch = conn.channel()
    name = cleanup.exchange(uniq("x"))
    ch.exchange_declare(name, "direct", durable=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, "direct", durable=False)
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange "
                                  f"'{name}' in vhost '/': received 'false' but current is 'true'")


def test_redeclare_identical_is_ok(ch, uniq, cleanup):
    name = cleanup.exchange(uniq("x"))
    ch.exchange_declare(name, "topic", durable=True)
    assert ch.exchange_declare(name, "topic", durable=True).method.NAME == "Exchange.DeclareOk"


def test_declare_reserved_amq_prefix_is_403(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("amq.foo", "direct")
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'"


def test_unknown_exchange_type_is_503_command_invalid(conn, uniq):
    ch = conn.channel()
    name = uniq("x")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.exchange_declare(name, "no-such-type")
    # An unknown type is a *connection* error in RabbitMQ.
    assert e.value.reply_code == 503
    assert e.value.reply_text == "COMMAND_INVALID - unknown exchange type 'no-such-type'"


def test_delete_if_unused(conn, uniq):
    ch = conn.channel()
    name = uniq("x")
    ch.exchange_declare(name, "direct")
    (q,) = queues(ch, 1)
    ch.queue_bind(q, name, "k")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_delete(name, if_unused=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"
    ch = conn.channel()
    ch.queue_unbind(q, name, "k")
    assert ch.exchange_delete(name, if_unused=True).method.NAME == "Exchange.DeleteOk"
    with pytest.raises(ChannelClosedByBroker) as e2:
        ch.exchange_declare(name, passive=True)
    assert e2.value.reply_code == 404


def test_delete_missing_exchange_is_ok(ch, uniq):
    # RabbitMQ treats deleting a missing exchange as success.
    assert ch.exchange_delete(uniq("missing")).method.NAME == "Exchange.DeleteOk"


def test_publish_to_missing_exchange_closes_channel_404(conn, uniq):
    ch = conn.channel()
    ch.confirm_delivery()
    name = uniq("missing")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish(name, "k", b"x")
    assert e.value.reply_code == 404
    assert e.value.reply_text == f"NOT_FOUND - no exchange '{name}' in vhost '/'"


def test_auto_delete_exchange_goes_when_last_binding_removed(conn, uniq):
    ch = conn.channel()
    name = uniq("ad")
    ch.exchange_declare(name, "direct", auto_delete=True)
    (q,) = queues(ch, 1)
    ch.queue_bind(q, name, "k")
    ch.queue_unbind(q, name, "k")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, passive=True)
    assert e.value.reply_code == 404


def test_exchange_to_exchange_bindings(cch, uniq, cleanup):
    src = cleanup.exchange(uniq("src"))
    dst = cleanup.exchange(uniq("dst"))
    cch.exchange_declare(src, "topic")
    cch.exchange_declare(dst, "direct")
    cch.exchange_bind(destination=dst, source=src, routing_key="orders.*")
    q_dst, q_src = queues(cch, 2)
    cch.queue_bind(q_dst, dst, "orders.new")
    cch.queue_bind(q_src, src, "#")
    for key in ("orders.new", "orders.old", "users.new"):
        cch.basic_publish(src, key, key.encode())
    assert bodies(cch, q_dst) == [b"orders.new"]
    assert bodies(cch, q_src) == [b"orders.new", b"orders.old", b"users.new"]
    cch.exchange_unbind(destination=dst, source=src, routing_key="orders.*")
    cch.basic_publish(src, "orders.new", b"after unbind")
    assert bodies(cch, q_dst) == []
    assert bodies(cch, q_src) == [b"after unbind"]


def test_exchange_binding_cycle_delivers_once(cch, uniq, cleanup):
    a = cleanup.exchange(uniq("a"))
    b = cleanup.exchange(uniq("b"))
    cch.exchange_declare(a, "fanout")
    cch.exchange_declare(b, "fanout")
    cch.exchange_bind(b, a)
    cch.exchange_bind(a, b)
    (q,) = queues(cch, 1)
    cch.queue_bind(q, a)
    cch.queue_bind(q, b)
    cch.basic_publish(a, "", b"once")
    assert bodies(cch, q) == [b"once"]


def test_alternate_exchange(cch, uniq, cleanup):
    ae = cleanup.exchange(uniq("ae"))
    main = cleanup.exchange(uniq("main"))
    cch.exchange_declare(ae, "fanout")
    cch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    routed, unrouted = queues(cch, 2)
    cch.queue_bind(routed, main, "good")
    cch.queue_bind(unrouted, ae)
    cch.basic_publish(main, "good", b"1")
    cch.basic_publish(main, "bad", b"2", mandatory=True)  # routed via the AE: no basic.return
    assert bodies(cch, routed) == [b"1"]
    assert bodies(cch, unrouted) == [b"2"]


def test_alternate_exchange_missing_message_dropped(cch, uniq, cleanup):
    main = cleanup.exchange(uniq("main"))
    cch.exchange_declare(main, "direct", arguments={"alternate-exchange": uniq("no-such-ae")})
    cch.basic_publish(main, "nowhere", b"dropped")  # no error; confirmed; simply unroutable
    with pytest.raises(pika.exceptions.UnroutableError) as e:
        cch.basic_publish(main, "nowhere", b"returned", mandatory=True)
    assert e.value.messages[0].method.reply_code == 312


def test_internal_exchange_publish_is_403(conn, uniq, cleanup):
    ch = conn.channel()
    name = cleanup.exchange(uniq("internal"))
    ch.exchange_declare(name, "fanout", internal=True)
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish(name, "", b"x")
    assert e.value.reply_code == 403
    assert e.value.reply_text == f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '/'"


def test_internal_exchange_reachable_through_e2e(cch, uniq, cleanup):
    front = cleanup.exchange(uniq("front"))
    inner = cleanup.exchange(uniq("inner"))
    cch.exchange_declare(front, "fanout")
    cch.exchange_declare(inner, "fanout", internal=True)
    cch.exchange_bind(inner, front)
    (q,) = queues(cch, 1)
    cch.queue_bind(q, inner)
    cch.basic_publish(front, "", b"via e2e")
    assert bodies(cch, q) == [b"via e2e"]


def test_cc_and_bcc_headers(cch, uniq, cleanup):
    ex = cleanup.exchange(uniq("direct"))
    cch.exchange_declare(ex, "direct")
    main, cc, bcc, other = queues(cch, 4)
    cch.queue_bind(main, ex, "main")
    cch.queue_bind(cc, ex, "cc-key")
    cch.queue_bind(bcc, ex, "bcc-key")
    cch.queue_bind(other, ex, "other")
    cch.basic_publish(ex, "main", b"m", pika.BasicProperties(
        headers={"CC": ["cc-key"], "BCC": ["bcc-key"], "keep": "yes"}))
    got = {}
    for q in (main, cc, bcc):
        ((method, props, body),) = drain(cch, q, 1)
        got[q] = (method.routing_key, props.headers)
        assert body == b"m"
    assert bodies(cch, other) == []
    # The CC header is delivered to every recipient; BCC is stripped; routing_key stays the original.
    for q in (main, cc, bcc):
        assert got[q] == ("main", {"CC": ["cc-key"], "keep": "yes"})


def test_the_same_properties_again_route_again(cch, uniq, cleanup):
    """A publisher sending the very same properties message after message (the broker reads
    their headers once) is routed each time as the first: BCC honoured and stripped every
    time, a headers exchange matching each message's own headers in between."""
    ex, hx = cleanup.exchange(uniq("direct")), cleanup.exchange(uniq("headers"))
    cch.exchange_declare(ex, "direct")
    cch.exchange_declare(hx, "headers")
    main, bcc, one, two = queues(cch, 4)
    cch.queue_bind(main, ex, "main")
    cch.queue_bind(bcc, ex, "bcc-key")
    cch.queue_bind(one, hx, "", {"a": 1})
    cch.queue_bind(two, hx, "", {"a": 2})
    blind = pika.BasicProperties(headers={"BCC": ["bcc-key"], "keep": "yes"})
    for i in range(3):
        cch.basic_publish(ex, "main", b"m%d" % i, blind)
    for q in (main, bcc):
        got = drain(cch, q, 3)
        assert [body for _, _, body in got] == [b"m0", b"m1", b"m2"]
        assert [props.headers for _, props, _ in got] == [{"keep": "yes"}] * 3
    for i, a in enumerate((1, 1, 2, 1, 2, 2)):
        cch.basic_publish(hx, "", b"h%d" % i, pika.BasicProperties(headers={"a": a}))
    assert bodies(cch, one) == [b"h0", b"h1", b"h3"]
    assert bodies(cch, two) == [b"h2", b"h4", b"h5"]


def test_cc_header_on_fanout_and_duplicate_targets_deliver_once(cch, uniq, cleanup):
    ex = cleanup.exchange(uniq("topic"))
    cch.exchange_declare(ex, "topic")
    (q,) = queues(cch, 1)
    cch.queue_bind(q, ex, "a.*")
    cch.basic_publish(ex, "a.1", b"x", pika.BasicProperties(headers={"CC": ["a.2", "a.3"]}))
    assert bodies(cch, q) == [b"x"]


# ---------------------------------------------------------------------------------------------
# Where RabbitMQ 3.10's answers were found to differ from ours
# ---------------------------------------------------------------------------------------------

def test_passive_declare_of_the_default_exchange_is_403(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("", passive=True)
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_deleting_a_system_exchange_is_403(conn, uniq):
    """'amq.' names cannot be deleted, whether they exist or not (check_exchange_deletion)."""
    for name in ("amq.direct", "amq." + uniq("x")):
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.exchange_delete(name)
        assert e.value.reply_code == 403
        assert e.value.reply_text == \
            f"ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '/' not allowed"


def test_unknown_type_is_checked_before_the_default_exchange(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.exchange_declare("", "no-such-type")
    assert e.value.reply_code == 503
    assert e.value.reply_text == "COMMAND_INVALID - unknown exchange type 'no-such-type'"


def test_exchange_unbind_after_the_destination_is_gone_is_ok(conn, uniq):
    ch = conn.channel()
    src, dst = uniq("src"), uniq("dst")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(destination=dst, source=src, routing_key="k")
    ch.exchange_delete(dst)
    ch.exchange_unbind(destination=dst, source=src, routing_key="k")
    ch.exchange_delete(src)
    ch.exchange_unbind(destination=dst, source=src, routing_key="k")
    assert ch.is_open


def test_redeclare_compares_only_the_alternate_exchange_argument(conn, uniq, cleanup):
    ch = conn.channel()
    name = cleanup.exchange(uniq("x"))
    ch.exchange_declare(name, "direct", arguments={"x-anything": 1, "alternate-exchange": "ae1"})
    ch.exchange_declare(name, "direct", arguments={"x-anything": 2, "alternate-exchange": "ae1"})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, "direct", arguments={"alternate-exchange": "ae2"})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' "
                                  f"for exchange '{name}' in vhost '/': received 'ae2' but "
                                  "current is 'ae1'")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(name, "direct")
    assert e.value.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' "
                                  f"for exchange '{name}' in vhost '/': received none but "
                                  "current is the value 'ae1' of type 'longstr'")


# ------------------------------------------------ x-consistent-hash (RabbitMQ's plugin)
CHASH = "x-consistent-hash"


def where(ch, qs) -> dict:
    """body -> the queue it was routed to, for every message in ``qs`` (drained)."""
    return {body: q for q in qs for body in bodies(ch, q)}


@pytest.mark.parametrize("arguments, text", [
    ({"hash-header": "h", "hash-property": "message_id"},
     "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "user_id"}, "PRECONDITION_FAILED - Unsupported property: user_id"),
])
def test_consistent_hash_arguments_are_checked_as_the_plugin_does(conn, uniq, arguments, text):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(uniq("chash"), CHASH, arguments=arguments)
    assert (e.value.reply_code, e.value.reply_text) == (406, text)


@pytest.mark.parametrize("key, text", [
    ("abc", 'PRECONDITION_FAILED - The binding key must be an integer: <<"abc">>'),
    ("", "PRECONDITION_FAILED - The binding key must be an integer: <<>>"),
    (" 2", 'PRECONDITION_FAILED - The binding key must be an integer: <<" 2">>'),
    ("0", "PRECONDITION_FAILED - The binding key must be greater than 0"),
    ("-2", "PRECONDITION_FAILED - The binding key must be greater than 0"),
])
def test_a_consistent_hash_binding_key_is_a_weight(conn, uniq, cleanup, key, text):
    ex = cleanup.exchange(uniq("chash"))
    ch = conn.channel()
    ch.exchange_declare(ex, CHASH)
    [q] = queues(ch, 1)
    ch.queue_bind(q, ex, "+2")                  # Erlang's list_to_integer takes a sign
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind(q, ex, key)
    assert (e.value.reply_code, e.value.reply_text) == (406, text)


def test_consistent_hash_sends_each_key_to_one_queue_by_weight(cch, uniq, cleanup):
    """Every message to exactly one queue; a key's messages all to the same one; a queue
    bound with weight 3 gets more than one with weight 1; a binding removed gives its keys
    to the others; no binding, no route."""
    ex = cleanup.exchange(uniq("chash"))
    cch.exchange_declare(ex, CHASH)
    with pytest.raises(pika.exceptions.UnroutableError):
        cch.basic_publish(ex, "k", b"nowhere", mandatory=True)
    light, heavy = queues(cch, 2)
    cch.queue_bind(light, ex, "1")
    cch.queue_bind(heavy, ex, "3")
    for i in range(2000):
        cch.basic_publish(ex, f"key-{i}", b"%d" % i)
    first = where(cch, (light, heavy))
    assert len(first) == 2000
    counts = {q: list(first.values()).count(q) for q in (light, heavy)}
    assert counts[heavy] > counts[light] > 200, counts
    for i in range(0, 2000, 50):                # again: each key where it went before
        cch.basic_publish(ex, f"key-{i}", b"%d" % i)
    assert where(cch, (light, heavy)) == {b"%d" % i: first[b"%d" % i] for i in range(0, 2000, 50)}
    cch.queue_unbind(heavy, ex, "3")
    for i in range(0, 2000, 50):
        cch.basic_publish(ex, f"key-{i}", b"%d" % i)
    assert set(where(cch, (light, heavy)).values()) == {light}


@pytest.mark.parametrize("arguments, props_of", [
    ({"hash-header": "account"}, lambda v: pika.BasicProperties(headers={"account": v})),
    ({"hash-property": "message_id"}, lambda v: pika.BasicProperties(message_id=v)),
    ({"hash-property": "correlation_id"}, lambda v: pika.BasicProperties(correlation_id=v)),
], ids=["hash-header", "message_id", "correlation_id"])
def test_consistent_hash_on_a_header_or_a_property(cch, uniq, cleanup, arguments, props_of):
    """The routing key is ignored: the header's (property's) value picks the queue; a
    message without it is still routed, to one queue."""
    ex = cleanup.exchange(uniq("chash"))
    cch.exchange_declare(ex, CHASH, arguments=arguments)
    qs = queues(cch, 3)
    for q in qs:
        cch.queue_bind(q, ex, "1")
    for i in range(300):
        cch.basic_publish(ex, f"rk-{i}", b"%d" % i, props_of(f"acct-{i % 30}"))
    seen = where(cch, qs)
    assert len(seen) == 300
    by_value = {}
    for body, q in seen.items():
        by_value.setdefault(int(body) % 30, set()).add(q)
    assert all(len(places) == 1 for places in by_value.values()), by_value
    assert len({q for places in by_value.values() for q in places}) > 1
    cch.basic_publish(ex, "rk", b"without", mandatory=True)     # no UnroutableError
    assert list(where(cch, qs)) == [b"without"]


def test_consistent_hash_on_a_property_through_dead_lettering_and_the_http_api(
        cch, mgmt, uniq, cleanup):
    """A message reaches the exchange dead-lettered, or published through the management
    API: its message_id still picks its queue (the same one as for a client's publish)."""
    ex = cleanup.exchange(uniq("chash"))
    cch.exchange_declare(ex, CHASH, arguments={"hash-property": "message_id"})
    qs = queues(cch, 3)
    for q in qs:
        cch.queue_bind(q, ex, "1")
    source = cleanup.queue(uniq("chash-dlx-source"))
    cch.queue_declare(source, arguments={"x-dead-letter-exchange": ex})
    ids = [f"order-{i}" for i in range(12)]
    for mid in ids:
        cch.basic_publish(ex, "", f"direct {mid}".encode(), pika.BasicProperties(message_id=mid))
        cch.basic_publish("", source, f"dead {mid}".encode(), pika.BasicProperties(message_id=mid))
        assert mgmt.request("POST", f"/api/exchanges/%2F/{quoted(ex)}/publish", {
            "properties": {"message_id": mid}, "routing_key": "", "payload": f"http {mid}",
            "payload_encoding": "string"}) == (200, {"routed": True})
    for _ in ids:
        method, _, _ = cch.basic_get(source)
        cch.basic_reject(method.delivery_tag, requeue=False)
    got: dict = {}

    def all_there():
        got.update(where(cch, qs))
        return len(got) == 36
    wait_until(all_there, timeout=15)
    for mid in ids:
        assert len({got[f"{how} {mid}".encode()] for how in ("direct", "dead", "http")}) == 1
