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
    ("/exchanges/x", ("x", a.SUBJECT, None)),
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
                                  "/queues/", "/queue/a/b", ""])
def test_other_forms_are_refused(addr):
    with pytest.raises(a.BadAddress):
        a.target(addr) if addr else a.source(addr)
    with pytest.raises(a.BadAddress):
        a.source(addr)


def test_a_message_to_needs_a_routing_key():
    assert a.of_to("/exchange/x/k") == ("x", "k")
    for to in (None, "", "/exchange/x"):
        with pytest.raises(a.BadAddress):
            a.of_to(to)


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
