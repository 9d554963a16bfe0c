"""Delivery acknowledgement timeouts (RabbitMQ's ``consumer_timeout``), in both process
layouts: a channel holding a delivery unacknowledged past its queue's timeout is closed with
406 and RabbitMQ's text, its deliveries go back flagged redelivered, and nothing else is
touched. The timeout is the broker's (``--consumer-timeout``), or the lower of the queue's
``x-consumer-timeout`` and its policy's ``consumer-timeout`` (RabbitMQ 3.12). The close's text
and ``basic.get``'s deliveries counting were measured on RabbitMQ 3.10.8 with
``consumer_timeout = 2000`` (3.10 has the broker-wide setting only: these run against ours).

Each timed-out case waits for the close itself (the channel's ``closing`` future); the checks
that a channel stays open wait a fixed span past the timeout, as nothing announces that a
timeout did not fire.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import aiormq
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess

TIMEOUT_MS = 1000           # the broker's, for these tests
TEXT = ("PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. Timeout value "
        "used: {} ms. This timeout value can be configured, see consumers doc guide to learn "
        "more")
# a close comes within the timeout plus two looks (one a second) and a margin
CLOSE_WITHIN = TIMEOUT_MS / 1000 + 2.5


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("ack-timeout"), *LAYOUTS[request.param],
                       "--consumer-timeout", str(TIMEOUT_MS), management=True) as b:
        yield b


@contextlib.asynccontextmanager
async def connected(broker):
    conn = await aiormq.connect(broker.url)
    try:
        yield conn
    finally:
        await conn.close()


async def closed_with(channel, within: float) -> tuple[str, float]:
    """(the reply text, seconds waited) of the broker's close of ``channel``."""
    start = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.shield(channel.closing), within)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        return exc.args[0], time.monotonic() - start
    raise AssertionError("the channel closed without a 406")


async def still_open_after(channel, seconds: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(channel.closing), seconds)
    except asyncio.TimeoutError:
        return not channel.is_closed
    return False


async def queue_with(conn, name: str, count: int, arguments: dict | None = None) -> None:
    setup = await conn.channel(publisher_confirms=True)
    await setup.queue_declare(name, auto_delete=False, arguments=arguments or {})
    await setup.queue_purge(name)
    for i in range(count):
        await setup.basic_publish(f"m{i}".encode(), routing_key=name)
    await setup.close()


async def test_an_unacked_delivery_closes_its_channel_and_comes_back_redelivered(broker):
    async with connected(broker) as conn:
        await queue_with(conn, "ct-consumer", 2)
        other = await conn.channel()             # on the same connection, acks in time
        await other.queue_declare("ct-other", auto_delete=True)
        slow = await conn.channel()
        got = []
        await slow.basic_qos(prefetch_count=10)
        await slow.basic_consume("ct-consumer", got.append)
        text, waited = await closed_with(slow, CLOSE_WITHIN)
        assert text == TEXT.format(slow.number, TIMEOUT_MS)
        assert waited >= TIMEOUT_MS / 1000 - 0.2 and len(got) == 2
        assert not other.is_closed and not conn.is_closed
        # both back, flagged, for the next consumer
        again = await conn.channel()
        for body in (b"m0", b"m1"):
            m = await again.basic_get("ct-consumer", no_ack=True)
            assert (m.body, m.delivery.redelivered) == (body, True)
        await again.queue_delete("ct-consumer")
    lines = [line for line in broker.output if "has timed out waiting" in line]
    assert any("queue 'ct-consumer'" in line and "Timeout used: 1000 ms" in line
               for line in lines), lines


async def test_a_basic_get_left_unacked_times_out_too(broker):
    async with connected(broker) as conn:
        await queue_with(conn, "ct-get", 1)
        ch = await conn.channel()
        m = await ch.basic_get("ct-get")
        assert m.body == b"m0"
        text, _ = await closed_with(ch, CLOSE_WITHIN)
        assert text == TEXT.format(ch.number, TIMEOUT_MS)
        again = await conn.channel()
        m = await again.basic_get("ct-get", no_ack=True)
        assert m.delivery.redelivered
        await again.queue_delete("ct-get")


async def test_acks_in_time_and_auto_ack_keep_the_channel_open(broker):
    async with connected(broker) as conn:
        await queue_with(conn, "ct-prompt", 0)
        ch = await conn.channel()
        auto = await conn.channel()
        pub = await conn.channel(publisher_confirms=True)
        seen = []

        async def handle(message):
            seen.append(message.body)
            await message.channel.basic_ack(message.delivery.delivery_tag)
        await ch.basic_consume("ct-prompt", handle)
        await auto.queue_declare("ct-auto", auto_delete=True)
        await auto.basic_consume("ct-auto", lambda m: None, no_ack=True)
        # a message every 0.2 s for 2.5 timeouts, each acked at once; the auto-acked pile up
        for i in range(12):
            await pub.basic_publish(b"x", routing_key="ct-prompt")
            await pub.basic_publish(b"y", routing_key="ct-auto")
            await asyncio.sleep(0.2)
        assert await still_open_after(ch, 0.5) and not auto.is_closed
        assert len(seen) == 12
        await pub.queue_delete("ct-prompt")


async def test_the_queue_argument_overrides_the_brokers_timeout(broker):
    async with connected(broker) as conn:
        await queue_with(conn, "ct-short", 1, {"x-consumer-timeout": 300})
        await queue_with(conn, "ct-long", 1, {"x-consumer-timeout": 600_000})
        long_ch = await conn.channel()
        await long_ch.basic_consume("ct-long", lambda m: None)
        short_ch = await conn.channel()
        await short_ch.basic_consume("ct-short", lambda m: None)
        text, waited = await closed_with(short_ch, 0.3 + 2.5)
        assert text == TEXT.format(short_ch.number, 300)
        assert await still_open_after(long_ch, CLOSE_WITHIN - waited)
        for q in ("ct-short", "ct-long"):
            await long_ch.queue_delete(q)


async def test_a_policy_sets_it_and_the_lower_of_policy_and_argument_wins(broker):
    status, _ = broker.request("PUT", "policies/%2F/ct-policy",
                               {"pattern": "^ct-pol-", "apply-to": "queues",
                                "definition": {"consumer-timeout": 400}})
    assert status == 201
    async with connected(broker) as conn:
        await queue_with(conn, "ct-pol-plain", 1)
        await queue_with(conn, "ct-pol-lower-arg", 1, {"x-consumer-timeout": 200})
        await queue_with(conn, "ct-pol-higher-arg", 1, {"x-consumer-timeout": 600_000})
        for name, used in (("ct-pol-plain", 400), ("ct-pol-lower-arg", 200),
                           ("ct-pol-higher-arg", 400)):
            ch = await conn.channel()
            await ch.basic_consume(name, lambda m: None)
            text, _ = await closed_with(ch, used / 1000 + 2.5)
            assert text == TEXT.format(ch.number, used), name
            await (await conn.channel()).queue_delete(name)
    assert broker.request("DELETE", "policies/%2F/ct-policy")[0] == 204


async def test_a_policy_changed_while_a_delivery_is_held_applies_to_it(broker):
    async with connected(broker) as conn:
        await queue_with(conn, "ct-later", 1, {"x-consumer-timeout": 600_000})
        ch = await conn.channel()
        await ch.basic_consume("ct-later", lambda m: None)
        assert await still_open_after(ch, 1.0)
        status, _ = broker.request("PUT", "policies/%2F/ct-later",
                                   {"pattern": "^ct-later$",
                                    "definition": {"consumer-timeout": 500}})
        assert status == 201
        text, _ = await closed_with(ch, 2.5)
        assert text == TEXT.format(ch.number, 500)
        await (await conn.channel()).queue_delete("ct-later")
    assert broker.request("DELETE", "policies/%2F/ct-later")[0] == 204


def test_a_policy_value_that_is_not_a_non_negative_integer_is_refused(broker):
    for value, shown in (("600", '<<"600">>'), (-1, "-1"), (1.5, "1.5")):
        status, body = broker.request("PUT", "policies/%2F/ct-bad",
                                      {"pattern": ".*", "definition": {"consumer-timeout": value}})
        assert status == 400
        assert body["reason"] == f"Validation failed\n\n{shown} is not a valid consumer timeout\n"
    assert broker.request("GET", "policies/%2F/ct-bad")[0] == 404
