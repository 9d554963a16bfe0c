"""A classic queue deletes whole segments once every message in them is settled."""
from __future__ import annotations

import os

import pika

from amqpbroker.supervisor.owner import queue_dir_name
from amqpbroker.testing import BrokerProcess


def segments(data_dir, queue: str) -> list[str]:
    directory = os.path.join(data_dir, "queues", queue_dir_name("/", queue))
    return sorted(f for f in os.listdir(directory)
                  if f.endswith(".log") and f[:-4].isdigit())


def test_acked_segments_are_deleted_and_unacked_kept(tmp_path):
    with BrokerProcess(tmp_path, "--segment-bytes", "65536") as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.queue_declare("seg", durable=True)
        ch.confirm_delivery()
        for i in range(600):
            ch.basic_publish("", "seg", b"%04d" % i + b"x" * 1020,
                             pika.BasicProperties(delivery_mode=2))
        many = segments(tmp_path, "seg")
        assert len(many) >= 8                       # ~600 KiB in 64 KiB segments
        # settle the first 500 (ack 450, reject 50 without requeue), keep 100 unacked
        got = [ch.basic_get("seg") for _ in range(600)]
        for method, _, _ in got[:450]:
            ch.basic_ack(method.delivery_tag)
        for method, _, _ in got[450:500]:
            ch.basic_reject(method.delivery_tag, requeue=False)
        ch.basic_publish("", "seg", b"barrier", pika.BasicProperties(delivery_mode=2))
        left = segments(tmp_path, "seg")
        assert 1 <= len(left) <= 3, left            # only segments holding offsets >= 500
        assert int(left[0][:-4]) <= 500
        conn.close()                                # the 100 unacked go back to the queue
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        bodies = [ch.basic_get("seg", auto_ack=True)[2][:4] for _ in range(101)]
        assert bodies == [b"%04d" % i for i in range(500, 600)] + [b"barr"]
        conn.close()
