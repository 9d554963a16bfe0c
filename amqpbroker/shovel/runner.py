"""One dynamic shovel at work: it consumes from its source and publishes to its destination,
as RabbitMQ's ``rabbit_amqp091_shovel`` does.

Each run connects to a source URI and a destination URI (one of each list, at random; a
URI without a host is this broker, reached over loopback with the internal login of
``frontend/auth.py``, as RabbitMQ's direct connection), declares what RabbitMQ declares (a
``src-queue`` or ``dest-queue`` that does not exist is made durable with its ``-args``; a
``src-exchange`` gets an exclusive server-named queue bound with ``src-exchange-key``),
then forwards each delivery:

* to ``dest-queue`` through the default exchange, or to ``dest-exchange`` with
  ``dest-exchange-key`` (the message's own routing key without one), or where it was
  published (its exchange and routing key) when neither is set;
* with its properties, ``dest-publish-properties`` set over them, and with
  ``dest-add-forward-headers`` an ``x-shovelled`` entry (``shovelled-by`` the cluster name,
  the shovel's name, vhost, URIs without credentials, endpoints) put first in that header's
  list; with ``dest-add-timestamp-header`` ``x-shovelled-timestamp`` (seconds);
* acknowledged at the source by ``ack-mode``: ``on-confirm`` once the destination confirms it
  (a nack there nacks it at the source, requeued), ``on-publish`` once it is published,
  ``no-ack`` never (consumed with auto-ack). The source's prefetch bounds what is in flight.

``src-delete-after`` ends the shovel after that many messages (``queue-length``: the source
queue's length when it started), and the shovel's parameter is deleted then, as RabbitMQ
does. A run that fails (a URI refused, a connection or channel closed) is logged, and the
next starts after ``reconnect-delay`` seconds (0: the shovel stays terminated). The status
(``/api/shovels``) is ``starting`` until both ends are set up, ``running`` after,
``terminated`` with a reason once it stopped for good.

The AMQP plumbing (connections, awaited answers, a run's end) is ``outbound.py``'s.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pika

from ..outbound import OutboundClient, status_time
from .definition import Definition, Uri

log = logging.getLogger("amqpbroker.shovel")


class Shovel(OutboundClient):
    log = log

    def __init__(self, registry, vhost: str, name: str, definition: Definition):
        super().__init__(registry)
        self.connection_name = f"Shovel {name}"
        self.describe = f"Shovel '{name}' in vhost '{vhost}'"
        self.vhost = vhost
        self.name = name
        self.d = definition
        self.state = "starting"
        self.reason: str | None = None
        self.timestamp = status_time()
        self.src_uri: Uri | None = None         # the URIs of the current run
        self.dest_uri: Uri | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop, and wait (a few seconds at most) for its connections to close cleanly: the
        acks it sent are then handled, so a clean shutdown moves nothing twice. Messages
        already published to the destination but not yet confirmed (a durable queue
        confirms after its fsync) are waited for first, so their acks are among those: a
        shovel stopped between the two moved them again after a restart."""
        await self._drain()
        await self._cancel()
        await self._closed()

    async def _run(self) -> None:
        while True:
            self.state, self.reason, self.timestamp = "starting", None, status_time()
            try:
                finished = await self._one_run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:        # the run's failure: logged, retried
                reason = str(exc) or type(exc).__name__
                log.error("Shovel '%s' in vhost '%s' failed: %s", self.name, self.vhost,
                          reason)
                finished = False
            finally:
                self._close()
            if finished:
                log.info("Shovel '%s' in vhost '%s' has finished (delete-after): its "
                         "parameter is deleted", self.name, self.vhost)
                self.registry.finished(self)
                return
            if not self.d.reconnect_delay:
                self.state, self.reason, self.timestamp = "terminated", reason, status_time()
                return
            await asyncio.sleep(self.d.reconnect_delay)

    # ------------------------------------------------------------ one run
    async def _one_run(self) -> bool:
        """Set up both ends and forward until ``delete-after`` is reached (True), or raise
        ``RunFailed``."""
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        self.src_uri, src = await self._connect(self.d.src_uris, "source")
        self.dest_uri, dest = await self._connect(self.d.dest_uris, "destination")
        d = self.d
        if d.src_queue is not None:
            await self._ensure_queue(src, d.src_queue, d.src_queue_args)
            queue = d.src_queue
        else:
            ok = await self._call(lambda cb: src.queue_declare("", exclusive=True, callback=cb))
            queue = ok.method.queue
            await self._call(lambda cb: src.queue_bind(queue, d.src_exchange,
                                                       d.src_exchange_key, callback=cb))
        if d.dest_queue is not None:
            await self._ensure_queue(dest, d.dest_queue, d.dest_queue_args)
        remaining = None                      # unlimited
        if d.delete_after == "queue-length":
            ok = await self._call(lambda cb: src.queue_declare(queue, passive=True,
                                                               callback=cb))
            remaining = ok.method.message_count
        elif isinstance(d.delete_after, int):
            remaining = d.delete_after
        if remaining == 0:
            return True
        return await self._forward(src, dest, queue, remaining)

    async def _forward(self, src, dest, queue: str, remaining: int | None) -> bool:
        d = self.d
        done = asyncio.get_running_loop().create_future()
        self._pending = pending = {}
        counts = {"published": 0, "settled": 0, "seq": 0}
        no_ack = d.ack_mode == "no-ack"

        def settled(n: int) -> None:
            counts["settled"] += n
            if remaining is not None and counts["settled"] >= remaining \
                    and not done.done():
                done.set_result(True)

        def on_confirm(frame) -> None:
            settled(self._confirmed(frame, src))

        def on_message(_ch, method, properties, body) -> None:
            if remaining is not None and counts["published"] >= remaining or self._stopping:
                return              # past the count, or stopping: left unacked, requeued
            exchange, key = self._destination(method)
            dest.basic_publish(exchange, key, body, self._properties(properties, method))
            counts["published"] += 1
            if d.ack_mode == "on-confirm":
                counts["seq"] += 1
                pending[counts["seq"]] = method.delivery_tag
                return
            if d.ack_mode == "on-publish":
                src.basic_ack(method.delivery_tag)
            settled(1)

        if d.ack_mode == "on-confirm":
            await self._call(lambda cb: dest.confirm_delivery(on_confirm, callback=cb))
        if not no_ack:
            await self._call(lambda cb: src.basic_qos(prefetch_count=d.prefetch, callback=cb))
        await self._call(lambda cb: src.basic_consume(
            queue, on_message, auto_ack=no_ack, arguments=d.src_consumer_args or None,
            callback=cb))
        self.state, self.timestamp = "running", status_time()
        log.info("Shovel '%s' in vhost '%s' is running: %s -> %s", self.name, self.vhost,
                 self.src_uri.shown, self.dest_uri.shown)
        await asyncio.wait({done, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        if self._ended.done():
            raise self._ended.exception()
        return True

    def _destination(self, method) -> tuple[str, str]:
        d = self.d
        if d.dest_queue is not None:
            return "", d.dest_queue
        exchange = d.dest_exchange if d.dest_exchange is not None else method.exchange
        key = d.dest_exchange_key if d.dest_exchange_key is not None else method.routing_key
        return exchange, key

    def _properties(self, props, method) -> pika.BasicProperties:
        d = self.d
        for key, value in d.publish_properties.items():
            setattr(props, key, value)
        if d.add_forward_headers or d.add_timestamp_header:
            headers = dict(props.headers or {})
            if d.add_forward_headers:
                headers["x-shovelled"] = [self._forward_entry(), *_as_list(
                    headers.get("x-shovelled"))]
            if d.add_timestamp_header:
                headers["x-shovelled-timestamp"] = int(time.time())
            props.headers = headers
        return props

    def _forward_entry(self) -> dict:
        """The ``x-shovelled`` entry, in RabbitMQ's order of keys."""
        entry = {"shovelled-by": self.registry.cluster_name(), "shovel-type": "dynamic",
                 "shovel-name": self.name, "shovel-vhost": self.vhost,
                 "src-uri": self.src_uri.shown, "dest-uri": self.dest_uri.shown}
        return {**entry, **dict(self._endpoints())}

    def _endpoints(self) -> list[tuple[str, str]]:
        """Where it takes from and puts to, as RabbitMQ names them (``src-queue``, or
        ``src-exchange`` and its key; the destination's keys that are set)."""
        d = self.d
        out = [("src-queue", d.src_queue)] if d.src_queue is not None else \
            [("src-exchange", d.src_exchange), ("src-exchange-key", d.src_exchange_key)]
        return out + [(key, value) for key, value in (
            ("dest-exchange", d.dest_exchange), ("dest-exchange-key", d.dest_exchange_key),
            ("dest-queue", d.dest_queue)) if value is not None]

    def status(self) -> dict:
        """This shovel as ``/api/shovels`` lists it (RabbitMQ's keys and order)."""
        out = {"node": self.registry.node_name(), "timestamp": self.timestamp,
               "name": self.name, "vhost": self.vhost, "type": "dynamic",
               "state": self.state}
        if self.state == "terminated":
            out["reason"] = self.reason
        if self.state != "running":
            return out
        out.update(src_uri=self.src_uri.shown, src_protocol="amqp091",
                   dest_protocol="amqp091", dest_uri=self.dest_uri.shown)
        out.update((key.replace("-", "_"), value) for key, value in self._endpoints())
        return out


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else []
