"""``/api/partitions`` (ours): every queue's log — offsets, bytes, segments, worker, and the
topic it is a partition of — in both process layouts, with pika doing the writing."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.partitioner import partition_of
from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until
from amqpbroker.testing.mgmt_client import ManagementClient

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout


@pytest.fixture(scope="module", params=list(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("partitions"), *LAYOUTS[request.param],
                       "--segment-bytes", "4096", management=True) as b:
        yield b


def get(b: BrokerProcess, path: str, user: str = "guest"):
    status, body, _ = ManagementClient(f"http://127.0.0.1:{b.management_port}").request(
        "GET", path, user, user)
    return status, body


def test_a_topics_partitions_and_a_classic_queue(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("pt", exchange_type="x-partitioned", arguments={"x-partitions": 3})
    ch.queue_declare("pt-classic", durable=True)
    try:
        keys = [f"k{i}" for i in range(30)]
        for key in keys:
            ch.basic_publish("pt", key, b"x" * 300)
        for i in range(20):             # persistent: confirmed means in the log (a transient
            ch.basic_publish("", "pt-classic", b"y" * 300,   # one may wait in write-behind)
                             pika.BasicProperties(delivery_mode=2))
        per_partition = [sum(1 for k in keys if partition_of(k.encode(), 3) == i)
                         for i in range(3)]

        status, listed = get(broker, "/api/partitions/%2F")
        assert status == 200
        mine = {p["queue"]: p for p in listed if p["queue"].startswith("pt")}
        assert set(mine) == {"pt-0", "pt-1", "pt-2", "pt-classic"}
        for i in range(3):
            p = mine[f"pt-{i}"]
            assert (p["topic"], p["partition"], p["type"], p["state"]) == ("pt", i, "stream",
                                                                           "running")
            assert (p["log_start_offset"], p["log_end_offset"]) == (0, per_partition[i])
            assert p["durable_offset"] == per_partition[i]      # confirmed: fsynced
            assert p["bytes"] == sum(s["bytes"] for s in p["segments"]) > 300 * per_partition[i]
            assert p["segments"][0]["base_offset"] == 0
            assert p["segments"][-1]["next_offset"] == per_partition[i]
            assert isinstance(p["worker"], int)
        classic = mine["pt-classic"]
        assert (classic["topic"], classic["partition"], classic["type"]) == (None, None,
                                                                             "classic")
        assert classic["log_end_offset"] == 20
        assert len(classic["segments"]) > 1                   # 4 KiB segments
        assert all(s["settled"] == 0 for s in classic["segments"])
        for _ in range(20):                                   # consume and ack them all
            m, _, _ = ch.basic_get("pt-classic")
            ch.basic_ack(m.delivery_tag)

        def settled_segments_gone():
            one = get(broker, "/api/partitions/%2F/pt-classic")[1]
            return one["log_start_offset"] > 0 or all(
                s["settled"] == s["next_offset"] - s["base_offset"]
                for s in one["segments"][:-1])
        wait_until(settled_segments_gone, what="acked segments settled or deleted")
        assert get(broker, "/api/partitions/%2F/nope")[0] == 404
        assert get(broker, "/api/partitions/no-such-vhost")[0] == 404
    finally:
        ch.exchange_delete("pt")
        ch.queue_delete("pt-classic")
        conn.close()
