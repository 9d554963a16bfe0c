"""RabbitMQ's ``rabbitmq_tracing`` plugin: traces that write a vhost's firehose to log files.

A trace (``PUT /api/traces/{vhost}/{name}`` ``{"format": "json" | "text", "pattern": "#",
"max_payload_bytes": N}``) turns the vhost's firehose on (frontend/trace.py) and runs a
*tracer*: a consumer on this broker (loopback, the internal login, as a local shovel's) of
an exclusive server-named queue bound to ``amq.rabbitmq.trace`` with the pattern
(``publish.<exchange>``, ``deliver.<queue>``), which appends one record per message to
``<name>.log`` in the tracing directory (``--tracing-dir``; default ``tracing`` in the data
directory; RabbitMQ's is ``/var/tmp/rabbitmq-tracing``). The records are RabbitMQ 3.10's
(measured with the plugin): a JSON object per line with its keys in order, or the text
block, the payload cut to ``max_payload_bytes``. Deleting the vhost's last trace turns its
firehose off; the log files stay until ``DELETE /api/trace-files/{name}``.

As RabbitMQ's, traces are not durable (a restart has none) and are this node's.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import os

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from .frontend.auth import INTERNAL_USER
from .frontend.session import NODE
from .queue_args import amqp_type

log = logging.getLogger("amqpbroker.tracing")

EXCHANGE = "amq.rabbitmq.trace"
FORMATS = ("json", "text")


class Traces:
    """This node's traces: (vhost, name) -> Tracer."""

    def __init__(self, owner):
        self.owner = owner
        self.running: dict[tuple[str, str], Tracer] = {}

    @property
    def directory(self) -> str:
        return self.owner.config.tracing_dir or os.path.join(self.owner.data_dir, "tracing")

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    async def add(self, vhost: str, name: str, fmt: str, pattern: str, max_payload) -> bool:
        """Start a trace, and return once its queue is bound (what is published from then
        on is traced); False if one of that name runs already (RabbitMQ keeps it)."""
        if (vhost, name) in self.running:
            return False
        os.makedirs(self.directory, exist_ok=True)
        tracer = self.running[(vhost, name)] = Tracer(self, vhost, name, fmt, pattern,
                                                      max_payload)
        vh = self.owner.vhosts[vhost]
        if not vh.tracing:
            self.owner.set_tracing(vh, True)
        tracer.start()
        await asyncio.shield(tracer._task)
        await self.owner.sync_frontends()   # every front-end traces from now on
        return True

    async def delete(self, vhost: str, name: str) -> bool:
        tracer = self.running.pop((vhost, name), None)
        if tracer is None:
            return False
        await tracer.stop()
        vh = self.owner.vhosts.get(vhost)
        if vh is not None and vh.tracing and not any(v == vhost for v, _ in self.running):
            self.owner.set_tracing(vh, False)
        return True

    def vhost_deleted(self, vhost: str) -> None:
        for key in [k for k in self.running if k[0] == vhost]:
            asyncio.ensure_future(self.running.pop(key).stop())

    def listing(self, vhost: str | None = None) -> list[dict]:
        return [t.json() for (v, _), t in sorted(self.running.items())
                if vhost is None or v == vhost]

    def close(self) -> None:
        """The broker stops: every tracer's file closed, its connection let go."""
        for tracer in self.running.values():
            tracer.close_now()
        self.running.clear()


class Tracer:
    def __init__(self, traces: Traces, vhost: str, name: str, fmt: str, pattern: str,
                 max_payload):
        self.traces = traces
        self.vhost, self.name, self.format, self.pattern = vhost, name, fmt, pattern
        self.max_payload = max_payload
        self.queue = None
        self.conn = None
        self.file = None
        self._task: asyncio.Task | None = None

    def json(self) -> dict:
        out = {"vhost": self.vhost, "name": self.name, "format": self.format,
               "pattern": self.pattern}
        if self.max_payload is not None:
            out["max_payload_bytes"] = self.max_payload
        if self.queue is not None:
            out["queue"] = {"name": self.queue, "vhost": self.vhost, "durable": False,
                            "auto_delete": False, "exclusive": True, "arguments": {},
                            "type": "classic", "node": NODE}
        return out

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        owner = self.traces.owner
        host, port = owner.shovels.local_address()
        params = pika.ConnectionParameters(
            host, port, self.vhost, pika.PlainCredentials(INTERNAL_USER,
                                                          owner.shovels.internal_secret()),
            client_properties={"connection_name": f"Trace {self.name}"})
        opened = loop.create_future()

        def failed(_conn, exc) -> None:
            if not opened.done():
                opened.set_exception(ConnectionError(str(exc)))
        try:
            self.file = open(self.traces.path(self.name + ".log"), "ab")
            self.conn = AsyncioConnection(params, on_open_callback=opened.set_result,
                                          on_open_error_callback=failed, custom_ioloop=loop)
            await opened
            channel = await _answer(lambda cb: self.conn.channel(on_open_callback=cb))
            ok = await _answer(lambda cb: channel.queue_declare("", exclusive=True,
                                                                callback=cb))
            self.queue = ok.method.queue
            await _answer(lambda cb: channel.queue_bind(self.queue, EXCHANGE, self.pattern,
                                                        callback=cb))
            channel.basic_consume(self.queue, self._on_message, auto_ack=True)
            log.info("Tracer opened log file %s with format %s", self.file.name, self.format)
        except Exception as exc:        # the directory, or this broker refusing it
            log.error("trace '%s' in vhost '%s' not started: %s", self.name, self.vhost, exc)

    def _on_message(self, _channel, method, properties, body) -> None:
        try:
            self.file.write(self.record(method.routing_key, properties.headers or {}, body))
            self.file.flush()
        except (OSError, KeyError, ValueError) as exc:
            log.error("trace '%s' in vhost '%s': a record not written: %s", self.name,
                      self.vhost, exc)

    def record(self, key: str, h: dict, body: bytes) -> bytes:
        """One firehose copy as the plugin writes it."""
        published = key.startswith("publish.")
        payload = body if self.max_payload is None else body[:self.max_payload]
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.isoformat(timespec="milliseconds")
        routed = [str(q) for q in h.get("routed_queues", [])] if published else None
        queue = None if published else key[len("deliver."):]
        keys = [str(k) for k in h.get("routing_keys", [])]
        props = h.get("properties") or {}
        if self.format == "json":
            out = {"channel": h["channel"], "connection": h["connection"],
                   "exchange": h["exchange_name"], "node": h["node"],
                   "payload": base64.b64encode(payload).decode(), "properties": props,
                   "queue": queue if queue is not None else "none",
                   "routed_queues": routed if routed is not None else "none",
                   "routing_keys": keys, "timestamp": stamp,
                   "type": "published" if published else "received",
                   "user": h["user"], "vhost": h["vhost"]}
            return (json.dumps(out, separators=(",", ":"), default=str) + "\n").encode()
        lines = ["", "=" * 80, f"{stamp}: Message {'published' if published else 'received'}",
                 "", f"Node:         {h['node']}", f"Connection:   {h['connection']}",
                 f"Virtual host: {h['vhost']}", f"User:         {h['user']}",
                 f"Channel:      {h['channel']}", f"Exchange:     {h['exchange_name']}",
                 f"Routing keys: {_erl_list(keys)}"]
        if queue is not None:
            lines.append(f"Queue:        {queue}")
        if routed is not None:
            lines.append(f"Routed queues: {_erl_list(routed)}")
        lines += [f"Properties:   {_erl_table(props)}", "Payload: "]
        return "\n".join(lines).encode() + b"\n" + payload + b"\n"

    def close_now(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.conn is not None and not self.conn.is_closed:
            try:
                self.conn.close()
            except Exception:
                pass
        if self.file is not None:
            self.file.close()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.conn is not None and not self.conn.is_closed:
            closed = asyncio.get_running_loop().create_future()
            self.conn.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
            try:
                self.conn.close()
                await asyncio.wait_for(closed, 5)
            except (Exception, asyncio.TimeoutError):
                pass
        if self.file is not None:
            self.file.close()


async def _answer(start):
    fut = asyncio.get_running_loop().create_future()
    start(lambda frame: fut.done() or fut.set_result(frame))
    return await asyncio.wait_for(fut, 10)


def _erl_list(items) -> str:
    return "[" + ",".join(f'<<"{i}">>' for i in items) + "]"


def _erl_table(table: dict) -> str:
    """Roughly Erlang's ``~p`` of an AMQP table: ``[{<<"name">>,type,value}, ...]``."""
    return "[" + ",".join(f'{{<<"{k}">>,{amqp_type(v)},{_erl_value(v)}}}'
                          for k, v in table.items()) + "]"


def _erl_value(v) -> str:
    if isinstance(v, dict):
        return _erl_table(v)
    if isinstance(v, str):
        return f'<<"{v}">>'
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
