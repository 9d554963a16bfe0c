"""Stream filtering as RabbitMQ 3.13 offers it over AMQP 0-9-1 (publisher header
``x-stream-filter-value``; consumer arguments ``x-stream-filter``, a string or a list, and
``x-stream-match-unfiltered``), in both process layouts. Only against us: the RabbitMQ on
this machine is 3.10, without filtering. One difference by design: RabbitMQ filters whole
chunks with a Bloom filter and the client must filter again; we deliver exactly the messages
that match."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

STREAM = {"x-queue-type": "stream"}


@pytest.fixture(params=list(LAYOUTS), scope="module")
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("streamfilter"), *LAYOUTS[request.param]) as b:
        yield b


@pytest.fixture(scope="module")
def filtered_stream(broker):
    """A stream of 60 messages: colour red/blue/green by turn, every fourth without one;
    all published (confirmed) in one go, so many share a batch."""
    c = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = c.channel()
    ch.queue_declare("colours", durable=True, arguments=STREAM)
    ch.confirm_delivery()
    expected = []
    for i in range(60):
        colour = None if i % 4 == 3 else ("red", "blue", "green")[i % 3]
        headers = {"i": i} if colour is None else {"i": i, "x-stream-filter-value": colour}
        ch.basic_publish("", "colours", b"%d" % i, pika.BasicProperties(headers=headers),
                         mandatory=False)
        expected.append(colour)
    c.close()
    return expected


def read(broker, n, prefetch=5, **arguments):
    c = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = c.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    ch.basic_consume("colours", lambda c_, m, p, b: (
        got.append((p.headers["x-stream-offset"], p.headers.get("x-stream-filter-value"))),
        c_.basic_ack(m.delivery_tag)), arguments={"x-stream-offset": "first", **arguments})
    leaks.wait_until(lambda: c.process_data_events(0.02) or len(got) >= n,
                     timeout=10, what=f"{n} deliveries")
    c.process_data_events(0.3)          # nothing else arrives
    c.close()
    return got


def test_one_value(broker, filtered_stream):
    want = [(i, c) for i, c in enumerate(filtered_stream) if c == "red"]
    assert read(broker, len(want), **{"x-stream-filter": "red"}) == want


def test_list_of_values(broker, filtered_stream):
    want = [(i, c) for i, c in enumerate(filtered_stream) if c in ("red", "green")]
    assert read(broker, len(want), **{"x-stream-filter": ["red", "green"]}) == want


def test_match_unfiltered_adds_messages_without_a_value(broker, filtered_stream):
    want = [(i, c) for i, c in enumerate(filtered_stream) if c in ("blue", None)]
    assert read(broker, len(want), **{"x-stream-filter": "blue",
                                      "x-stream-match-unfiltered": True}) == want


def test_filtered_out_messages_spend_no_credit(broker, filtered_stream):
    """prefetch 1 and a value that matches only near the end: the skipped messages did not
    use up the consumer's single credit."""
    want = [(i, c) for i, c in enumerate(filtered_stream) if c == "green" and i > 50]
    got = read(broker, len(want), prefetch=1, **{"x-stream-filter": "green",
                                                "x-stream-offset": 51})
    assert got == want


def test_no_filter_gets_everything(broker, filtered_stream):
    got = read(broker, 60)
    assert got == list(enumerate(filtered_stream))
