"""How fast a federation link moves messages, ours beside RabbitMQ's (run from bench/).

Each broker federates exchange ``fedbench`` of vhost ``/`` from the same exchange of its own
vhost ``fedbench-up`` (an upstream URI of its own address: one broker, both ends), so both
brokers do the same work. A run sets the link up, stops it (its policy deleted, with
``resource-cleanup-mode: never``: the upstream queue and bindings stay), publishes
``--count`` messages upstream, waits until the upstream queue holds them all, then puts the
policy back and times the link draining them into the downstream queue: messages per second
moved by the link (its start included), and the broker's CPU per message over the whole run
(the publishes upstream included, the same on both).

    python bench/federation_bench.py --target ours=127.0.0.1:5672:<pid> \\
        --target rabbitmq=127.0.0.1:5801:<beam pid> --count 20000 --repeat 3

A target's management API is on its AMQP port + 10000 (RabbitMQ's 5672/15672);
``FEDERATION_BENCH_MGMT=5801:15801,...`` says otherwise. RabbitMQ needs
``rabbitmq_federation`` enabled. The modes are the upstream's ``ack-mode``.
"""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request

import pika
from plugin_bench import main

from amqpbroker.testing.leaks import wait_until

UP_VHOST = "fedbench-up"


def _mgmt_port(amqp_port: int) -> int:
    pairs = dict(p.split(":") for p in os.environ.get("FEDERATION_BENCH_MGMT", "").split(",")
                 if p)
    return int(pairs.get(str(amqp_port), amqp_port + 10000))


def _api(host: str, port: int, method: str, path: str, body=None) -> int:
    req = urllib.request.Request(
        f"http://{host}:{_mgmt_port(port)}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _get(host: str, port: int, path: str):
    req = urllib.request.Request(
        f"http://{host}:{_mgmt_port(port)}/api/{path}",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _until(cond) -> None:
    """Poll every 5 ms (the drain's end is timed by it) for at most two minutes."""
    wait_until(cond, 120.0, "the broker", step=lambda: time.sleep(0.005))


def _depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


async def run_once(host: str, port: int, mode: str, size: int, count: int, _window) -> float:
    policy = {"pattern": "^fedbench$", "apply-to": "exchanges",
              "definition": {"federation-upstream": "fedbench"}}
    _api(host, port, "PUT", f"vhosts/{UP_VHOST}", {})
    _api(host, port, "PUT", f"permissions/{UP_VHOST}/guest",
         {"configure": ".*", "write": ".*", "read": ".*"})
    _api(host, port, "PUT", "parameters/federation-upstream/%2F/fedbench", {"value": {
        "uri": f"amqp://guest:guest@{host}:{port}/{UP_VHOST}", "ack-mode": mode,
        "resource-cleanup-mode": "never"}})
    down = pika.BlockingConnection(pika.ConnectionParameters(host, port))
    dch = down.channel()
    dch.exchange_declare("fedbench", "fanout")
    dch.queue_declare("fedbench-q")
    dch.queue_purge("fedbench-q")
    dch.queue_bind("fedbench-q", "fedbench")
    upc = pika.BlockingConnection(pika.ConnectionParameters(host, port, UP_VHOST))
    uch = upc.channel()
    try:
        assert _api(host, port, "PUT", "policies/%2F/fedbench", policy) in (201, 204)

        def bound_upstream():
            return any(b["source"] == "fedbench" for b in _get(host, port,
                                                               f"bindings/{UP_VHOST}"))
        _until(bound_upstream)
        assert _api(host, port, "DELETE", "policies/%2F/fedbench") == 204
        _until(lambda: not _get(host, port, "federation-links"))
        [queue] = [q["name"] for q in _get(host, port, f"queues/{UP_VHOST}")
                   if q["name"].startswith("federation: fedbench")]
        uch.queue_purge(queue)
        body = b"x" * size
        for _ in range(count):
            uch.basic_publish("fedbench", "", body)
        _until(lambda: _depth(uch, queue) == count)
        start = time.perf_counter()
        assert _api(host, port, "PUT", "policies/%2F/fedbench", policy) in (201, 204)
        _until(lambda: _depth(dch, "fedbench-q") >= count)
        return count / (time.perf_counter() - start)
    finally:
        _api(host, port, "DELETE", "policies/%2F/fedbench")
        _api(host, port, "DELETE", "parameters/federation-upstream/%2F/fedbench")
        dch.exchange_delete("fedbench")
        dch.queue_delete("fedbench-q")
        down.close()
        upc.close()
        _api(host, port, "DELETE", f"vhosts/{UP_VHOST}")


if __name__ == "__main__":
    main(__doc__, "ack-mode", "on-confirm,no-ack", run_once)
