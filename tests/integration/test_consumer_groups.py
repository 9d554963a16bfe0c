"""Consumer groups (``x-consumer-group``) from unchanged pika, aio-pika and kombu code, in both
process layouts: partitions split between members, incremental rebalancing, commits driven by
acks, static membership, offsets across restarts and worker kills, lag and offset resets in
the management API (``/api/consumer-groups``).

No sleeps: every wait pumps the clients until a condition holds (or fails after a deadline).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks
from amqpbroker.testing.mgmt_client import ManagementClient

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

# a short revocation grace (cancelled members' unacked deliveries) and a session timeout
# long enough for a reconnect on a loaded machine
FLAGS = ("--group-revoke-grace-ms", "2000", "--group-session-timeout-ms", "30000")
DEADLINE = 30.0


@pytest.fixture(scope="module", params=list(LAYOUTS.values()), ids=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("groups"), *request.param, *FLAGS,
                       management=True) as b:
        yield b


def api(b, method, path, body=None):
    return ManagementClient(f"http://127.0.0.1:{b.management_port}").request(
        method, path, "guest", "guest", body=body)[:2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Member:
    """A pika consumer in a group: records (partition, offset, body, redelivered) and acks
    each delivery unless ``ack`` is False (then ``pending`` keeps the delivery tags)."""

    def __init__(self, b, name: str, group: str, *, prefetch: int = 50, ack: bool = True,
                 no_ack: bool = False, arguments: dict | None = None):
        self.conn = pika.BlockingConnection(pika.URLParameters(b.url))
        self.ch = self.conn.channel()
        if not no_ack:
            self.ch.basic_qos(prefetch_count=prefetch)
        self.ack = ack and not no_ack
        self.got: list[tuple] = []
        self.pending: list[int] = []
        self.cancelled = False
        self.ch.add_on_cancel_callback(lambda _: setattr(self, "cancelled", True))
        self.tag = self.ch.basic_consume(name, self._on_message, auto_ack=no_ack,
                                         arguments={"x-consumer-group": group,
                                                    **(arguments or {})})

    def _on_message(self, ch, method, props, body):
        h = props.headers
        self.got.append((h["x-partition"], h["x-stream-offset"], body.decode(),
                         method.redelivered))
        if self.ack:
            ch.basic_ack(method.delivery_tag)
        else:
            self.pending.append(method.delivery_tag)

    def partitions(self) -> set[int]:
        return {p for p, _, _, _ in self.got}

    def bodies(self) -> list[str]:
        return [body for _, _, body, _ in self.got]

    def close(self):
        if self.conn.is_open:
            self.conn.close()


def pump(members, cond, what: str, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while True:
        for m in members:
            if m.conn.is_open:
                m.conn.process_data_events(time_limit=0.02)
        if cond():
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")


def publish(b, exchange: str, routing_keys, bodies=None):
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for i, key in enumerate(routing_keys):
            body = bodies[i] if bodies else key
            ch.basic_publish(exchange, key, body.encode())
    finally:
        conn.close()


def declare_topic(b, name: str, n: int, **extra):
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        conn.channel().exchange_declare(name, exchange_type="x-partitioned",
                                        arguments={"x-partitions": n, **extra})
    finally:
        conn.close()


def declare_stream(b, name: str):
    conn = pika.BlockingConnection(pika.URLParameters(b.url))
    try:
        conn.channel().queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    finally:
        conn.close()


def keys_for_all(n: int, per: int = 5) -> list[str]:
    """Routing keys covering every partition of an n-partition topic ``per`` times."""
    from amqpbroker.partitioner import partition_of
    out, count, i = [], [0] * n, 0
    while min(count) < per:
        key = f"key-{i}"
        p = partition_of(key.encode(), n)
        if count[p] < per:
            count[p] += 1
            out.append(key)
        i += 1
    return out


def group_info(b, group: str) -> dict:
    status, body = api(b, "GET", f"/api/consumer-groups/%2F/{group}")
    assert status == 200, body
    return body


def assignment(b, group: str) -> dict[str, set]:
    return {m["member_id"]: {a["partition"] for a in m["assignment"]}
            for m in group_info(b, group)["members"]}


def stable(b, group: str, members: int, partitions: int) -> dict[str, set]:
    """Wait until the group is stable with every partition assigned; its assignment."""
    def check():
        g = group_info(b, group)
        got = {m["member_id"]: {a["partition"] for a in m["assignment"]} for m in g["members"]}
        if g["state"] == "stable" and len(got) == members and \
                sum(len(s) for s in got.values()) == partitions:
            return got
        return None
    return leaks.wait_until(check, what=f"group {group} stable", timeout=DEADLINE)


def committed(b, group: str) -> dict[int, int]:
    return {p["partition"]: p["committed_offset"] for p in group_info(b, group)["partitions"]}


# ------------------------------------------------------------------ splitting and rebalancing
def test_two_members_split_a_topic_and_a_third_moves_only_what_it_takes(broker):
    topic, group = unique("orders"), unique("billing")
    declare_topic(broker, topic, 6)
    a = Member(broker, topic, group)
    b = Member(broker, topic, group)
    try:
        first = stable(broker, group, 2, 6)
        assert sorted(len(s) for s in first.values()) == [3, 3]
        keys = keys_for_all(6)
        publish(broker, topic, keys)
        pump([a, b], lambda: len(a.got) + len(b.got) == len(keys), "all deliveries")
        assert a.partitions() | b.partitions() == set(range(6))
        assert not a.partitions() & b.partitions(), "a partition went to two members"
        assert sorted(a.bodies() + b.bodies()) == sorted(keys)
        # every delivery names its partition and offset; offsets run 0.. per partition
        for m in (a, b):
            for p in m.partitions():
                assert [o for q, o, _, _ in m.got if q == p] == list(range(5))

        c = Member(broker, topic, group)
        try:
            second = stable(broker, group, 3, 6)
            assert sorted(len(s) for s in second.values()) == [2, 2, 2]
            moved = [p for mid, parts in first.items() for p in parts - second[mid]]
            assert len(moved) == 2 and set(moved) == second[[m for m in second
                                                             if m not in first][0]]
            a.got.clear(), b.got.clear()
            publish(broker, topic, keys)
            pump([a, b, c], lambda: len(a.got) + len(b.got) + len(c.got) == len(keys),
                 "all deliveries after the third joined")
            seen = [a.partitions(), b.partitions(), c.partitions()]
            assert sorted(len(s) for s in seen) == [2, 2, 2]
            assert set().union(*seen) == set(range(6))
            # nothing redelivered: every message was acked before the rebalance
            assert not any(r for m in (a, b, c) for _, _, _, r in m.got)
            assert all(o == 5 for m in (a, b, c) for _, o, _, _ in m.got[:1])
        finally:
            c.close()
    finally:
        a.close()
        b.close()


def test_connection_close_successor_resumes_after_the_commit(broker):
    stream, group = unique("events"), unique("g")
    declare_stream(broker, stream)
    publish(broker, "", [stream] * 20, [f"m{i}" for i in range(20)])
    a = Member(broker, stream, group, ack=False, prefetch=10,
               arguments={"x-stream-offset": "first"})
    pump([a], lambda: len(a.got) == 10, "10 deliveries (prefetch)")
    for tag in a.pending[:5]:                       # offsets 0..4 acked, 5..9 not
        a.ch.basic_ack(tag)
    pump([a], lambda: committed(broker, group).get(0) == 5, "commit 5")
    b = Member(broker, stream, group)                   # joins; the stream is a's
    try:
        pump([a, b], lambda: group_info(broker, group)["state"] == "stable", "stable")
        assert b.got == []
        a.close()                                       # its 5 unacked go to b
        pump([b], lambda: len(b.got) == 15, "b resumes at the commit")
        assert [o for _, o, _, _ in b.got] == list(range(5, 20))
        assert b.bodies() == [f"m{i}" for i in range(5, 20)]
        pump([b], lambda: committed(broker, group).get(0) == 20, "commit 20")
    finally:
        a.close()
        b.close()


def test_cancel_with_unacked_hands_over_after_the_grace(broker):
    stream, group = unique("events"), unique("g")
    declare_stream(broker, stream)
    publish(broker, "", [stream] * 10, [f"m{i}" for i in range(10)])
    a = Member(broker, stream, group, ack=False, arguments={"x-stream-offset": "first"})
    b = Member(broker, stream, group)
    try:
        pump([a], lambda: len(a.got) == 10, "a's deliveries")
        a.ch.basic_cancel(a.tag)                    # leaves; may still ack during the grace
        for tag in a.pending[:6]:
            a.ch.basic_ack(tag)
        # b gets the stream once a's unacked ones are given up (grace): from offset 6
        pump([a, b], lambda: len(b.got) == 4, "b resumes after the grace")
        assert [o for _, o, _, _ in b.got] == [6, 7, 8, 9]
        assert group_info(broker, group)["members"][0]["member_id"].endswith(b.tag)
    finally:
        a.close()
        b.close()


def test_nack_with_requeue_redelivers_to_the_member_and_holds_the_commit(broker):
    stream, group = unique("events"), unique("g")
    declare_stream(broker, stream)
    publish(broker, "", [stream] * 6, [f"m{i}" for i in range(6)])
    a = Member(broker, stream, group, ack=False, arguments={"x-stream-offset": "first"})
    try:
        pump([a], lambda: len(a.got) == 6, "deliveries")
        tags = a.pending[:]
        a.pending.clear()
        a.ch.basic_ack(tags[0])
        a.ch.basic_nack(tags[1], requeue=True)          # offset 1 comes again
        a.ch.basic_reject(tags[2], requeue=False)       # settled
        for tag in tags[3:]:
            a.ch.basic_ack(tag)
        pump([a], lambda: len(a.got) == 7, "the redelivery")
        assert a.got[6][1:] == (1, "m1", True)
        assert committed(broker, group) == {0: 1}        # offset 1 is owed
        a.ch.basic_ack(a.pending.pop())
        pump([a], lambda: committed(broker, group) == {0: 6}, "commit 6")
    finally:
        a.close()


def test_no_ack_is_at_most_once(broker):
    stream, group = unique("events"), unique("g")
    declare_stream(broker, stream)
    a = Member(broker, stream, group, no_ack=True)
    pump([a], lambda: group_info(broker, group)["state"] == "stable", "stable")
    publish(broker, "", [stream] * 10, [f"m{i}" for i in range(10)])
    pump([a], lambda: len(a.got) == 10, "deliveries")
    pump([a], lambda: committed(broker, group).get(0) == 10, "committed at delivery")
    a.close()
    b = Member(broker, stream, group)
    try:
        publish(broker, "", [stream] * 3, ["n0", "n1", "n2"])
        pump([b], lambda: len(b.got) == 3, "only the new ones")
        assert b.bodies() == ["n0", "n1", "n2"]
    finally:
        b.close()


def test_static_member_reconnects_without_a_rebalance(broker):
    topic, group = unique("orders"), unique("static")
    declare_topic(broker, topic, 6)
    s = Member(broker, topic, group, arguments={"x-group-instance-id": "node-1"})
    p = Member(broker, topic, group)
    try:
        before = stable(broker, group, 2, 6)
        mine = next(parts for mid, parts in before.items() if mid.endswith(s.tag))
        theirs = next(parts for mid, parts in before.items() if mid.endswith(p.tag))
        # a second member with the same instance id is refused while the first is connected
        other = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = other.channel()
        ch.basic_qos(prefetch_count=10)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.basic_consume(topic, lambda *a: None, arguments={
                "x-consumer-group": group, "x-group-instance-id": "node-1"})
        assert refused.value.reply_code == 406
        assert "x-group-instance-id 'node-1' is in use" in refused.value.reply_text
        other.close()

        s.close()                                   # lost, not left: partitions reserved
        keys = keys_for_all(6)
        publish(broker, topic, keys)
        expected_p = sum(1 for _ in theirs) * 5
        pump([p], lambda: len(p.got) == expected_p, f"the other member's deliveries {theirs} {p.got}")
        g = group_info(broker, group)
        assert [set(a["partition"] for a in m["assignment"]) for m in g["members"]] == [theirs]
        s2 = Member(broker, topic, group, arguments={"x-group-instance-id": "node-1"})
        try:
            after = stable(broker, group, 2, 6)
            assert next(parts for mid, parts in after.items() if mid.endswith(s2.tag)) == mine
            pump([s2], lambda: len(s2.got) == len(mine) * 5, "the reserved partitions")
            assert s2.partitions() == mine
            assert p.partitions() == theirs         # the other member saw no change
            assert len(p.got) == expected_p
        finally:
            s2.close()
    finally:
        s.close()
        p.close()


def test_partitions_added_to_a_topic_are_spread_over_the_members(broker):
    topic, group = unique("orders"), unique("g")
    declare_topic(broker, topic, 2)
    a = Member(broker, topic, group)
    b = Member(broker, topic, group)
    try:
        stable(broker, group, 2, 2)
        assert api(broker, "PUT", f"/api/topics/%2F/{topic}", {"partitions": 4})[0] == 204
        after = stable(broker, group, 2, 4)
        assert sorted(len(s) for s in after.values()) == [2, 2]
        keys = keys_for_all(4)
        publish(broker, topic, keys)
        pump([a, b], lambda: len(a.got) + len(b.got) == len(keys), "all deliveries")
        assert a.partitions() | b.partitions() == {0, 1, 2, 3}
        assert not a.partitions() & b.partitions()
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ refusals
def test_refusals(broker):
    topic, group = unique("orders"), unique("g")
    declare_topic(broker, topic, 2)
    classic = unique("jobs")
    declare_topic(broker, classic, 2, **{"x-partition-type": "classic"})
    cases = [
        (topic, {"x-consumer-group": group}, 0, 406, "consumer prefetch count is not set"),
        (classic, {"x-consumer-group": group}, 10, 406, "consumer groups need stream partitions"),
        (topic, {"x-consumer-group": 5}, 10, 406, "invalid arg 'x-consumer-group'"),
        (topic, {"x-consumer-group": group, "x-group-instance-id": 7}, 10, 406,
         "invalid arg 'x-group-instance-id'"),
        (unique("nothing"), {"x-consumer-group": group}, 10, 404, "NOT_FOUND"),
    ]
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        for name, args, prefetch, code, text in cases:
            ch = conn.channel()
            if prefetch:
                ch.basic_qos(prefetch_count=prefetch)
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.basic_consume(name, lambda *a: None, arguments=args)
            assert (e.value.reply_code, text in e.value.reply_text) == (code, True), \
                e.value.reply_text
    finally:
        conn.close()


def test_read_permission_on_every_partition(broker):
    topic, user = unique("orders"), unique("reader")
    declare_topic(broker, topic, 3)
    assert api(broker, "PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})[0] == 201
    # may read partitions 0 and 1 but not 2
    assert api(broker, "PUT", f"/api/permissions/%2F/{user}",
               {"configure": "", "write": "", "read": f"^{topic}-[01]$"})[0] == 201
    try:
        conn = pika.BlockingConnection(pika.URLParameters(
            f"amqp://{user}:pw@127.0.0.1:{broker.port}/"))
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=10)
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.basic_consume(topic, lambda *a: None,
                                 arguments={"x-consumer-group": "g"})
            assert e.value.reply_code == 403
            assert f"queue '{topic}-2'" in e.value.reply_text
        finally:
            conn.close()
    finally:
        api(broker, "DELETE", f"/api/users/{user}")


# ------------------------------------------------------------------ the API
def test_lag_of_a_group_with_no_members_and_reset_offsets(broker):
    topic, group = unique("orders"), unique("g")
    declare_topic(broker, topic, 2)
    keys = keys_for_all(2, per=4)
    a = Member(broker, topic, group, arguments={"x-stream-offset": "first"})
    publish(broker, topic, keys)
    pump([a], lambda: len(a.got) == 8, "deliveries")
    pump([a], lambda: committed(broker, group) == {0: 4, 1: 4}, "commits")
    status, body = api(broker, "POST", f"/api/consumer-groups/%2F/{group}/reset-offsets",
                       {"topic": topic, "to": "earliest"})
    assert status == 409, body                      # it has a member
    a.close()
    publish(broker, topic, keys)                    # 4 more per partition: lag 8
    g = leaks.wait_until(lambda: (lambda g: g if g["state"] == "empty" and g["lag"] == 8
                                  else None)(group_info(broker, group)),
                         what="empty group with lag", timeout=DEADLINE)
    assert g["members"] == [] and g["topics"] == [topic]
    assert [(p["partition"], p["committed_offset"], p["log_end_offset"], p["lag"])
            for p in g["partitions"]] == [(0, 4, 8, 4), (1, 4, 8, 4)]
    status, listed = api(broker, "GET", "/api/consumer-groups")
    assert status == 200 and [x["lag"] for x in listed if x["name"] == group] == [8]

    for to, expect in (("earliest", 0), ({"offset": 6}, 6), ("latest", 8),
                       ({"offset": 99}, 8), ({"timestamp": 0}, 0)):
        status, body = api(broker, "POST", f"/api/consumer-groups/%2F/{group}/reset-offsets",
                           {"topic": topic, "to": to})
        assert status == 200, body
        assert [p["committed_offset"] for p in body["partitions"]] == [expect, expect]
    assert api(broker, "POST", f"/api/consumer-groups/%2F/{group}/reset-offsets",
               {"topic": topic, "to": "yesterday"})[0] == 400
    assert api(broker, "POST", f"/api/consumer-groups/%2F/{group}/reset-offsets",
               {"topic": unique("none"), "to": "earliest"})[0] == 404
    # reset to earliest: the next member reads everything again
    b = Member(broker, topic, group)
    try:
        pump([b], lambda: len(b.got) == 16, "everything again")
        assert sorted(b.bodies()) == sorted(keys * 2)
    finally:
        b.close()


# ------------------------------------------------------------------ other clients
def test_aio_pika_members_on_a_stream_and_kombu_on_a_topic(broker):
    import aio_pika
    import kombu

    stream, group = unique("events"), unique("g")
    declare_stream(broker, stream)
    publish(broker, "", [stream] * 6, [f"m{i}" for i in range(6)])

    async def aio():
        conn = await aio_pika.connect(broker.url)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=10)
            q = await ch.get_queue(stream, ensure=False)
            got = []
            done = asyncio.Event()

            async def on_message(msg):
                async with msg.process():
                    got.append((msg.headers["x-partition"], msg.headers["x-stream-offset"],
                                msg.body.decode()))
                    if len(got) == 6:
                        done.set()
            await q.consume(on_message, arguments={"x-consumer-group": group,
                                                   "x-stream-offset": "first"})
            await asyncio.wait_for(done.wait(), DEADLINE)
            return got
    got = asyncio.run(aio())
    assert got == [(0, i, f"m{i}") for i in range(6)]
    leaks.wait_until(lambda: committed(broker, group) == {0: 6}, what="commit",
                     timeout=DEADLINE)

    topic = unique("orders")
    declare_topic(broker, topic, 3)
    keys = keys_for_all(3, per=2)
    received = []
    with kombu.Connection(broker.url) as conn:
        queue = kombu.Queue(topic, no_declare=True,
                            consumer_arguments={"x-consumer-group": group,
                                                "x-stream-offset": "first"})

        def on_message(body, message):
            received.append((message.headers["x-partition"], body))
            message.ack()
        with conn.Consumer(queue, callbacks=[on_message], accept=["text/plain", "json"],
                           prefetch_count=10):
            publish(broker, topic, keys)
            end = time.monotonic() + DEADLINE
            while len(received) < len(keys) and time.monotonic() < end:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    assert sorted(b.decode() if isinstance(b, bytes) else b for _, b in received) == sorted(keys)
    assert {p for p, _ in received} == {0, 1, 2}


# ------------------------------------------------------------------ restarts and kills
@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_offsets_survive_a_restart_and_a_kill(tmp_path, layout):
    with BrokerProcess(tmp_path, *layout, *FLAGS, management=True) as b:
        stream, group = "events", "g"
        declare_stream(b, stream)
        publish(b, "", [stream] * 20, [f"m{i}" for i in range(20)])
        a = Member(b, stream, group, ack=False, arguments={"x-stream-offset": "first"})
        pump([a], lambda: len(a.got) == 20, "deliveries")
        for tag in a.pending[:12]:
            a.ch.basic_ack(tag)
        pump([a], lambda: committed(b, group).get(0) == 12, "commit 12")
        a.close()

        b.stop()
        b.restart()                                 # clean restart: the commit is kept
        g = group_info(b, group)
        assert (g["state"], g["lag"], committed(b, group)) == ("empty", 8, {0: 12})
        c = Member(b, stream, group, ack=False)
        pump([c], lambda: len(c.got) == 8, "resumes at 12")
        assert [o for _, o, _, _ in c.got] == list(range(12, 20))
        for tag in c.pending[:4]:
            c.ch.basic_ack(tag)
        pump([c], lambda: committed(b, group).get(0) == 16, "commit 16")
        c.close()

        # a kill: the worker owning the stream (or, in one process, the broker)
        if b.worker_pids:
            index = b.api(f"queues/%2F/{stream}")["worker"]
            old = b.worker_pids[index]
            os.kill(old, signal.SIGKILL)
            leaks.wait_until(lambda: (lambda w: w["running"] and w["pid"] != old)(
                b.api("nodes")[0]["workers"][index]), what="worker restart", timeout=DEADLINE)
        else:
            b.kill()
            b.restart()
        after = leaks.wait_until(lambda: committed(b, group) or None, what="offsets",
                                 timeout=DEADLINE)
        assert after == {0: 16}                     # acked before the kill, and fsynced
        d = Member(b, stream, group)
        try:
            pump([d], lambda: len(d.got) == 4, "resumes at 16")
            assert [o for _, o, _, _ in d.got] == [16, 17, 18, 19]
        finally:
            d.close()


@pytest.mark.parametrize("frontends", ["0", "2"])
def test_a_member_survives_a_worker_kill_and_gets_its_unacked_again(tmp_path, frontends):
    """--workers 2: the worker owning half of the partitions is SIGKILLed while the member
    holds unacked deliveries from it. The member is not cancelled: once the worker is back,
    its shares are subscribed again, the supervisor re-sends the assignment, and the unacked
    messages come again (from the committed offset); acked ones do not."""
    with BrokerProcess(tmp_path, "--workers", "2", "--frontends", frontends, *FLAGS,
                       management=True) as b:
        topic, group = "orders", "g"
        declare_topic(b, topic, 4)
        status, info = api(b, "GET", f"/api/topics/%2F/{topic}")
        on_0 = {q["partition"] for q in info["queues"] if q["worker"] == 0}
        assert on_0 and len(on_0) < 4
        a = Member(b, topic, group, ack=False)
        stable(b, group, 1, 4)
        keys = keys_for_all(4, per=3)
        publish(b, topic, keys)
        pump([a], lambda: len(a.got) == 12, "deliveries")
        for tag in a.pending:
            a.ch.basic_ack(tag)
        a.pending.clear()
        pump([a], lambda: committed(b, group) == {p: 3 for p in range(4)}, "commits")
        publish(b, topic, keys)
        pump([a], lambda: len(a.got) == 24, "unacked deliveries")
        old = b.worker_pids[0]
        os.kill(old, signal.SIGKILL)
        leaks.wait_until(lambda: (lambda w: w["running"] and w["pid"] != old)(
            b.api("nodes")[0]["workers"][0]), what="worker restart", timeout=DEADLINE)
        again = 12 + 12 + 3 * len(on_0)
        pump([a], lambda: len(a.got) == again, "the killed worker's unacked ones again")
        assert not a.cancelled
        assert sorted((p, o) for p, o, _, _ in a.got[24:]) == \
            sorted((p, o) for p in on_0 for o in (3, 4, 5))
        a.ack = True
        for tag in a.pending:
            a.ch.basic_ack(tag)         # the void ones (from before the kill) are ignored
        pump([a], lambda: committed(b, group) == {p: 6 for p in range(4)}, "all committed")
        a.close()


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_a_static_members_partitions_move_when_its_session_times_out(tmp_path, layout):
    with BrokerProcess(tmp_path, *layout, "--group-session-timeout-ms", "1500",
                       management=True) as b:
        topic, group = "orders", "g"
        declare_topic(b, topic, 4)
        s = Member(b, topic, group, arguments={"x-group-instance-id": "node-1"})
        p = Member(b, topic, group)
        try:
            stable(b, group, 2, 4)
            s.close()
            after = stable(b, group, 1, 4)          # once the reservation has ended
            assert list(after.values()) == [{0, 1, 2, 3}]
            keys = keys_for_all(4)
            publish(b, topic, keys)
            pump([p], lambda: len(p.got) == len(keys), "every partition's deliveries")
        finally:
            s.close()
            p.close()
