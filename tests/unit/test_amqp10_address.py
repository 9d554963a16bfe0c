"""AMQP 1.0 link addresses (amqpbroker/amqp10/address.py), as RabbitMQ's AMQP 1.0 support
reads them: the plugin's forms and 4.0's, what each target and source means, what is
refused, and the stream-offset filter's consumer argument."""
from __future__ import annotations

import datetime

import pytest

from amqpbroker.amqp10 import address as a


@pytest.mark.parametrize("addr, means", [
    ("/exchange/orders/eu", ("orders", "eu", None)),
    ("/exchange/orders", ("orders", a.SUBJECT, None)),
    ("/topic/a.b.c", ("amq.topic", "a.b.c", None)),
    ("/amq/queue/jobs", ("", "jobs", None)),
    ("/queue/jobs", ("", "jobs", "jobs")),
    ("/queue", ("", a.SUBJECT, None)),
    ("/exchanges/my%20x/k%2F1", ("my x", "k/1", None)),
    ("/exchanges/x", ("x", "", None)),          # 4.0: the empty routing key
    ("/queues/q%2Fslash", ("", "q/slash", None)),
    (None, (None, a.SUBJECT, None)),
])
def test_targets(addr, means):
    assert a.target(addr) == means


@pytest.mark.parametrize("addr, means", [
    ("/queue/jobs", ("jobs", "jobs", None)),
    ("/amq/queue/jobs", ("jobs", None, None)),
    ("/queues/j%20obs", ("j obs", None, None)),
    ("/exchange/orders/eu", (None, None, ("orders", "eu"))),
    ("/topic/a.*", (None, None, ("amq.topic", "a.*"))),
])
def test_sources(addr, means):
    assert a.source(addr) == means


@pytest.mark.parametrize("addr", ["/fruit/orange", "queue/x", "/exchange/", "/amq/queue/",
                                  "/queues/", "/queue/a/b", "", "/exchanges/amq.default/k"])
def test_other_forms_are_refused(addr):
    with pytest.raises(a.BadAddress):
        a.target(addr) if addr else a.source(addr)
    with pytest.raises(a.BadAddress):
        a.source(addr)


def test_a_message_to_needs_a_routing_key():
    assert a.of_to("/exchange/x/k") == ("x", "k")
    assert a.of_to("/exchanges/x") == ("x", "")
    with pytest.raises(a.BadAddress, match="anonymous terminus requires 'to' address to be "
                                           "set"):
        a.of_to(None)
    for to in ("/exchange/x", "/nowhere"):
        with pytest.raises(a.BadAddress, match=f"bad 'to' address string: {to}"):
            a.of_to(to)


def test_a_v2_queue_target_must_exist():
    assert a.existing_queue("/queues/a%20b") == "a b"
    assert a.existing_queue("/amq/queue/a") is None         # 3.10's: not checked
    assert a.existing_queue(None) is None


def test_stream_filters():
    def filters(*pairs):
        return ("map", [(("symbol", k), ("described", (("symbol", k), v))) for k, v in pairs])
    assert a.consumer_arguments(filters(
        ("rabbitmq:stream-filter", ("array", [("utf8", "a"), ("utf8", "b")])),
        ("rabbitmq:stream-match-unfiltered", ("boolean", True)),
        ("rabbitmq:stream-offset-spec", ("utf8", "first")))) == {
        "x-stream-filter": ["a", "b"], "x-stream-match-unfiltered": True,
        "x-stream-offset": "first"}
    assert a.consumer_arguments(filters(("rabbitmq:stream-filter", ("utf8", "a")))) == {
        "x-stream-filter": ["a"]}
    f = a.MessageFilter.of(filters(
        ("amqp:properties-filter", ("map", [(("symbol", "subject"), ("utf8", "&p:order.")),
                                            (("symbol", "group-id"), ("utf8", "g1"))])),
        ("amqp:application-properties-filter", ("map", [(("utf8", "region"),
                                                         ("utf8", "&s:-1"))]))))
    props = [("null", None)] * 3 + [("utf8", "order.7")] + [("null", None)] * 6 + \
        [("utf8", "g1")]
    assert f.accepts([], props, {"region": "eu-1"})
    assert not f.accepts([], props, {"region": "eu-2"})
    assert not f.accepts([], props, {})
    assert not f.accepts([], props[:10], {"region": "eu-1"})          # no group-id
    assert a.MessageFilter.of(("map", [])) is None
    amp = a.MessageFilter.of(filters(("amqp:application-properties-filter", ("map", [
        (("utf8", "k"), ("utf8", "&&p:literal"))]))))
    assert amp.accepts([], [], {"k": "&p:literal"}) and \
        not amp.accepts([], [], {"k": "&&p:literal"})


def spec(value) -> tuple:
    return ("map", [(("symbol", "rabbitmq:stream-offset-spec"), value)])


def test_the_stream_offset_filter():
    assert a.consumer_arguments(spec(("utf8", "first"))) == {"x-stream-offset": "first"}
    assert a.consumer_arguments(spec(("ulong", 7))) == {"x-stream-offset": 7}
    assert a.consumer_arguments(spec(("timestamp", 1_700_000_000_999))) == {
        "x-stream-offset": datetime.datetime(2023, 11, 14, 22, 13, 20,
                                             tzinfo=datetime.timezone.utc)}
    described = ("described", (("symbol", "rabbitmq:stream-offset-spec"), ("long", 3)))
    assert a.consumer_arguments(spec(described)) == {"x-stream-offset": 3}
    assert a.consumer_arguments(("null", None)) == {}
    assert a.consumer_arguments(("map", [(("symbol", "other"), ("utf8", "x"))])) == {}
    assert a.consumer_arguments(spec(("boolean", True))) == {}
