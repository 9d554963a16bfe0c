"""``amqpbroker ctl groups``: list, show and reset-offsets against a running broker whose group
is fed and read by pika, in both process layouts. The tables must be aligned (every cell starts
where its header does), ``--format json`` must give what the API gives, exit statuses are the
ones ctl.py documents, and a reset must be what the next member of the group reads from."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pytest

import amqpbroker
from amqpbroker.partitioner import partition_of
from amqpbroker.testing import LAYOUTS, BrokerProcess, leaks

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

PARTITIONS = 3
FIRST, SECOND = 10, 3            # messages per partition published before and after a time


@pytest.fixture(scope="module", params=list(LAYOUTS.values()), ids=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("ctlgroups"), *request.param, management=True) as b:
        yield b


def ctl(b: BrokerProcess | None, *args: str, url: str | None = None):
    """``amqpbroker ctl`` on the code under test (this worktree's amqpbroker)."""
    root = str(Path(amqpbroker.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}
    url = url or f"http://127.0.0.1:{b.management_port}"
    return subprocess.run([sys.executable, "-m", "amqpbroker", "ctl", "--url", url, *args],
                          env=env, capture_output=True, text=True, timeout=60)


def table(text: str) -> list[list[str]]:
    """The rows of an aligned table (header first), checking the alignment: every cell of
    every row starts exactly where its column's header starts."""
    lines = text.rstrip("\n").split("\n")
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    rows = []
    for line in lines:
        row = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        for a in starts[1:]:
            if a < len(line):
                assert line[a - 2:a] == "  " and line[a] != " ", f"misaligned: {line!r}"
        assert " ".join(row).split() == line.split(), f"a cell overflows its column: {line!r}"
        rows.append(row)
    return rows


def keys_per_partition() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(k) < 2 for k in out.values()):
        key = f"key-{i}"
        p = partition_of(key.encode(), PARTITIONS)
        if len(out[p]) < 2:
            out[p].append(key)
        i += 1
    return out


def publish(ch, topic: str, per_partition: int) -> None:
    for p, keys in keys_per_partition().items():
        for n in range(per_partition):
            ch.basic_publish(topic, keys[n % 2], f"{p}:{n}".encode())


class Member:
    """One pika consumer in the group, acking what it gets (from the first message where the
    group has no commit)."""

    def __init__(self, b: BrokerProcess, topic: str, group: str):
        self.conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = self.conn.channel()
        ch.basic_qos(prefetch_count=5)
        self.got: list[tuple[int, int]] = []          # (x-partition, x-stream-offset)

        def on_message(ch, method, props, body):
            self.got.append((props.headers["x-partition"], props.headers["x-stream-offset"]))
            ch.basic_ack(method.delivery_tag)
        ch.basic_consume(topic, on_message, arguments={"x-consumer-group": group,
                                                       "x-stream-offset": "first"})

    def wait_for(self, n: int) -> None:
        leaks.wait_until(lambda: len(self.got) >= n, timeout=30, what=f"{n} deliveries",
                         step=lambda: self.conn.process_data_events(time_limit=0.05))

    def close(self) -> None:
        self.conn.close()


def group_api(b: BrokerProcess, group: str) -> dict:
    return b.api(f"consumer-groups/%2F/{group}")


def committed(b: BrokerProcess, group: str, topic: str) -> list[int]:
    parts = sorted((p for p in group_api(b, group)["partitions"] if p["topic"] == topic),
                   key=lambda p: p["partition"])
    return [p["committed_offset"] for p in parts]


def test_ctl_groups(broker):
    topic, group = f"ctl-events-{uuid.uuid4().hex[:6]}", f"ctl-billing-{uuid.uuid4().hex[:6]}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.exchange_declare(topic, exchange_type="x-partitioned",
                        arguments={"x-partitions": PARTITIONS})
    ch.confirm_delivery()
    try:
        publish(ch, topic, FIRST)
        between = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            milliseconds=1)
        # the clock has passed `between` (a condition on the clock, not a pause): every
        # message of the second batch is stored at or after it, the first batch before it
        leaks.wait_until(lambda: datetime.datetime.now(datetime.timezone.utc) > between,
                         timeout=1, what="the clock", step=lambda: time.sleep(0.001))
        publish(ch, topic, SECOND)
        end = FIRST + SECOND

        member = Member(broker, topic, group)
        member.wait_for(PARTITIONS * end)
        leaks.wait_until(lambda: group_api(broker, group)["lag"] == 0, timeout=30,
                         what="the acks to commit")
        g = group_api(broker, group)
        [m] = g["members"]

        # list: a table and the API's JSON
        out = ctl(broker, "groups", "list")
        assert (out.returncode, out.stderr) == (0, "")
        rows = table(out.stdout)
        assert rows[0] == ["GROUP", "TOPICS", "STATE", "MEMBERS", "LAG"]
        assert [group, topic, g["state"], "1", "0"] in rows[1:]
        out = ctl(broker, "groups", "list", "--format", "json")
        assert out.returncode == 0
        listed = {x["name"]: x for x in json.loads(out.stdout)}
        assert listed[group]["lag"] == 0 and listed[group]["topics"] == [topic]
        out = ctl(broker, "groups", "list", "--vhost", "no-such-vhost")
        assert (out.returncode, out.stderr) == (1, "Error: vhost 'no-such-vhost' not found\n")

        # show: a line, the partitions, the members
        out = ctl(broker, "groups", "show", group)
        assert (out.returncode, out.stderr) == (0, "")
        head, partitions, members = out.stdout.split("\n\n")
        assert head == f"group '{group}' in vhost '/': {g['state']}, 1 member, lag 0"
        assert table(partitions) == [
            ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER"],
            *([topic, str(p), str(end), str(end), "0", m["member_id"]]
              for p in range(PARTITIONS))]
        assert table(members) == [
            ["MEMBER", "INSTANCE", "CONNECTION", "ASSIGNMENT"],
            [m["member_id"], "-", m["connection"],
             ",".join(f"{topic}-{p}" for p in range(PARTITIONS))]]
        out = ctl(broker, "groups", "show", group, "--format", "json")
        assert json.loads(out.stdout) == group_api(broker, group)

        # no reset while the group has a member: refused, nothing moved
        out = ctl(broker, "groups", "reset-offsets", group, "--topic", topic, "--to-earliest")
        assert (out.returncode, out.stderr) == (
            1, f"Error: consumer group '{group}' has members on '{topic}' in vhost '/': "
               f"offsets can be reset only while it has none\n"), out
        assert out.stdout == ""
        assert committed(broker, group, topic) == [end] * PARTITIONS
        member.close()
        leaks.wait_until(lambda: group_api(broker, group)["members"] == [], timeout=30,
                         what="the member to leave")

        def reset(*to: str) -> list[list[str]]:
            out = ctl(broker, "groups", "reset-offsets", group, "--topic", topic, *to)
            assert (out.returncode, out.stderr) == (0, ""), out
            return table(out.stdout)

        assert reset("--to-earliest") == [
            ["TOPIC", "PARTITION", "NEW-OFFSET", "LOG-END-OFFSET", "LAG"],
            *([topic, str(p), "0", str(end), str(end)] for p in range(PARTITIONS))]
        assert committed(broker, group, topic) == [0] * PARTITIONS
        assert group_api(broker, group)["lag"] == PARTITIONS * end
        reset("--to-latest")
        assert committed(broker, group, topic) == [end] * PARTITIONS
        reset("--to-offset", "1000")                       # clamped to the log end
        assert committed(broker, group, topic) == [end] * PARTITIONS
        reset("--to-datetime", between.isoformat())
        assert committed(broker, group, topic) == [FIRST] * PARTITIONS
        out = ctl(broker, "groups", "reset-offsets", group, "--topic", topic,
                  "--to-offset", "3", "--format", "json")
        assert out.returncode == 0
        assert [p["committed_offset"] for p in json.loads(out.stdout)["partitions"]] == \
            [3] * PARTITIONS
        assert committed(broker, group, topic) == [3] * PARTITIONS

        # the next member of the group reads from there
        member = Member(broker, topic, group)
        member.wait_for(PARTITIONS * (end - 3))
        first = {}
        for p, o in member.got:
            first.setdefault(p, o)
        assert first == {p: 3 for p in range(PARTITIONS)}
        member.close()
    finally:
        if conn.is_open:
            conn.close()
        cleanup = pika.BlockingConnection(pika.URLParameters(broker.url))
        cleanup.channel().exchange_delete(topic)
        cleanup.close()


def test_ctl_groups_errors(broker):
    out = ctl(broker, "groups", "show", "no-such-group")
    assert (out.returncode, out.stderr) == (
        1, "Error: consumer group 'no-such-group' in vhost '/' not found\n")
    out = ctl(broker, "groups", "reset-offsets", "no-such-group", "--topic", "t",
              "--to-latest")
    assert (out.returncode, out.stderr) == (1, "Error: no topic or stream 't' in vhost '/'\n")
    out = ctl(broker, "groups", "list", "--password", "wrong")
    assert (out.returncode, out.stderr) == (1, "Error: Login failed\n")


@pytest.mark.parametrize("args,complaint", [
    (["reset-offsets", "g", "--topic", "t"], "one of the arguments --to-earliest"),
    (["reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest"],
     "not allowed with argument"),
    (["reset-offsets", "g", "--to-earliest"], "--topic"),
    (["reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
     "not an offset (an integer >= 0): '-1'"),
    (["reset-offsets", "g", "--topic", "t", "--to-datetime", "yesterday"],
     "not an ISO 8601 date and time: 'yesterday'"),
    (["list", "--format", "yaml"], "invalid choice: 'yaml'"),
    (["show"], "name"),
], ids=["no target", "two targets", "no topic", "negative offset", "bad datetime",
        "bad format", "no group"])
def test_ctl_groups_usage_errors_exit_2(args, complaint):
    out = ctl(None, "groups", *args, url="http://127.0.0.1:1")     # never reached
    assert out.returncode == 2 and complaint in out.stderr, out.stderr
    assert out.stdout == ""


def test_ctl_groups_datetime_without_zone_is_utc():
    from amqpbroker.ctl import parser
    args = parser().parse_args(["groups", "reset-offsets", "g", "--topic", "t",
                                "--to-datetime", "2026-12-01T18:00:00"])
    assert args.to_datetime == int(datetime.datetime(
        2026, 12, 1, 18, tzinfo=datetime.timezone.utc).timestamp() * 1000)
    args = parser().parse_args(["groups", "reset-offsets", "g", "--topic", "t",
                                "--to-datetime", "2026-12-01T19:00:00+01:00"])
    assert args.to_datetime == int(datetime.datetime(
        2026, 12, 1, 18, tzinfo=datetime.timezone.utc).timestamp() * 1000)


def test_ctl_groups_cannot_reach_the_broker():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = ctl(None, "groups", "list", url=f"http://127.0.0.1:{port}")
    assert out.returncode == 3                  # ctl's status for "cannot connect"
    assert out.stderr.startswith(f"Error: cannot connect to http://127.0.0.1:{port}: ")
