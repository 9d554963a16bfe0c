"""What the cluster tests do as a client of a ``LocalCluster`` (``testing/cluster.py``):
connect with pika, find the controller, count a queue's messages, read a queue as a node's
management API shows it, declare a
replication-factor-3 quorum queue and wait until every node agrees on its leader, publish
until confirmed, drain with basic.get, read a replica's log bytes. One copy for
tests/cluster/."""
from __future__ import annotations

import glob
import os
import subprocess
import time

import pika

from ..supervisor.owner import queue_dir_name


def connect(node, user: str = "guest", password: str = "guest",
            timeout: float | None = None) -> pika.BlockingConnection:
    """A pika connection to ``node``; ``timeout`` bounds the connect and a blocked
    connection (a node cut off hangs rather than refuses)."""
    params = pika.URLParameters(node.url)   # its address: loopback, or a lab's veth
    params.credentials = pika.PlainCredentials(user, password)
    if timeout is not None:
        params.socket_timeout = params.blocked_connection_timeout = timeout
    return pika.BlockingConnection(params)


def controller(cluster, not_=None):
    """The controller every running node agrees on (BrokerProcess), other than ``not_``."""
    def agreed():
        seen = {cluster.controller_seen_by(n) for n in cluster.nodes
                if n.proc is not None and n.proc.poll() is None}
        name = seen.pop() if len(seen) == 1 else None
        return name if name is not None and (not_ is None or name != not_.node) else None
    return cluster.node(cluster.wait_until(agreed))


def depth(node, queue: str) -> int:
    """Queue ``queue``'s ready messages, as a passive declare on ``node`` says."""
    conn = connect(node)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def queue_on(node, name: str) -> dict:
    """Queue ``name`` as ``node``'s ``/api/queues`` shows it ({} when it has none)."""
    return {q["name"]: q for q in node.api("queues")}.get(name, {})


def declare_quorum(cluster, name: str, arguments: dict | None = None):
    """A replication-factor-3 quorum queue; wait until every node agrees on its leader and
    has all three replicas in its ISR. Returns the leader's BrokerProcess."""
    conn = connect(cluster.nodes[0])
    conn.channel().queue_declare(name, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 3, **(arguments or {})})
    conn.close()

    def agreed():
        seen = [queue_on(n, name) for n in cluster.nodes]
        leaders = {q.get("leader") for q in seen}
        if len(leaders) == 1 and None not in leaders and all(len(q.get("isr", ())) == 3
                                                             for q in seen):
            return leaders.pop()
        return None
    return cluster.node(cluster.wait_until(agreed).split("@")[1])


def publish_until_confirmed(node, queue: str, bodies, timeout: float = 30.0) -> None:
    """Publish each body until it is confirmed, as a client does that republishes a nack: a
    node whose view of the new leader lags a moment forwards to the old, fenced one, which
    nacks (correctly: nothing it did not store is confirmed)."""
    conn = connect(node, timeout=10)
    ch = conn.channel()
    ch.confirm_delivery()
    deadline = time.monotonic() + timeout
    for body in bodies:
        while True:
            try:
                ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
                break
            except pika.exceptions.NackError:
                assert time.monotonic() < deadline, f"{body!r} still nacked after {timeout}s"
                conn.sleep(0.1)
    conn.close()


def publish_confirmed(node, queue: str, bodies) -> list:
    """Publish each body with confirms (pika raises on a nack); returns what was confirmed."""
    conn = connect(node)
    ch = conn.channel()
    ch.confirm_delivery()
    confirmed = []
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2),
                         mandatory=True)
        confirmed.append(body)
    conn.close()
    return confirmed


def queue_dir(node, name: str) -> str:
    """The directory of ``name``'s copy on ``node`` (vhost "/")."""
    return os.path.join(node.data_dir, "queues", queue_dir_name("/", name))


def log_bytes(node, name: str) -> bytes:
    """The bytes of ``name``'s log segments on ``node``, in offset order."""
    out = b""
    for p in sorted(glob.glob(os.path.join(queue_dir(node, name), "*.log"))):
        if os.path.basename(p)[0].isdigit():
            with open(p, "rb") as f:
                out += f.read()
    return out


def drain(node, queue: str, expected: int, ack: bool = True) -> list[tuple[bytes, bool]]:
    """basic.get (and ack) until ``expected`` messages came or the queue stayed empty for
    200 tries; [(body, redelivered)]."""
    conn = connect(node)
    ch = conn.channel()
    got, empty = [], 0
    while len(got) < expected and empty < 200:
        method, _, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            empty += 1
            conn.sleep(0.05)
            continue
        got.append((body, method.redelivered))
        if ack:
            ch.basic_ack(method.delivery_tag)
    conn.close()
    return got


def ctl(node, *args) -> subprocess.CompletedProcess:
    """``amqpbroker ctl ARGS`` against ``node``'s management API (the installed command)."""
    from .. import child
    return subprocess.run([*child.command("amqpbroker"), "ctl", "--url",
                           f"http://127.0.0.1:{node.management_port}", *args],
                          capture_output=True, text=True, timeout=60)
