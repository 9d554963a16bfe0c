"""Federation links at work, as RabbitMQ 3.10's ``rabbit_federation_exchange_link`` and
``rabbit_federation_queue_link`` (the package doc says what each declares and moves).

A link runs until stopped: each run connects to one of its upstream's URIs (at random) and
to this broker (the internal login, ``outbound.py``), sets up, then forwards; a run that
fails is logged, its status becomes ``error`` with the reason, and the next run starts after
the upstream's ``reconnect-delay`` seconds. Acknowledgement follows ``ack-mode``:
``on-confirm`` acks upstream once this broker confirmed the message (a nack requeues it
upstream), ``on-publish`` once published, ``no-ack`` consumes with auto-ack. A message's
``user_id`` is dropped unless ``trust-user-id`` (this broker checks it against the link's
login otherwise).

A link stopped because it is no longer wanted (its policy, upstream or exchange went)
deletes what it declared upstream (the queue and the internal exchange), unless
``resource-cleanup-mode`` is ``never``, as RabbitMQ does. One stopped because this broker
stops keeps them: messages published upstream meanwhile wait in that queue and arrive when
the broker is back (RabbitMQ deletes them on a clean node stop too; losing what was
published while a node restarted is not what a durable broker should do).
"""
from __future__ import annotations

import asyncio
import logging
import zlib

from pika.compat import long

from ..outbound import OutboundClient, RunFailed, status_time
from . import hops
from .upstreams import Upstream

log = logging.getLogger("amqpbroker.federation")


def link_id(*key) -> str:
    """A link's ``id`` in ``/api/federation-links`` (8 hex digits of its key)."""
    return f"{zlib.crc32(repr(key).encode()):08x}"


class Link(OutboundClient):
    """What exchange and queue links share: the run loop, the forwarding, the status."""
    kind = "exchange"
    log = log

    def __init__(self, registry, vhost: str, name: str, upstream: Upstream, policy: str):
        super().__init__(registry)
        self.vhost = vhost
        self.name = name                        # the downstream exchange or queue
        self.upstream = upstream
        self.policy = policy
        self.connection_name = f"Federation link (upstream: {upstream.name}, policy: " \
                               f"{policy})"
        self.describe = f"Federation {self.kind} '{name}' in vhost '{vhost}' (upstream " \
                        f"'{upstream.name}')"
        self.state, self.error, self.timestamp = "starting", None, status_time()
        self.uri = None                         # the URI of the current run
        self.upstream_cluster: str | None = None
        self.up = self.down = None              # the current run's channels
        self._seq = 0

    @property
    def upstream_name(self) -> str:
        """The upstream exchange or queue."""
        return self.upstream.exchange if self.kind == "exchange" else self.upstream.queue

    @property
    def id(self) -> str:
        return link_id(self.kind, self.vhost, self.name, self.upstream.name,
                       self.upstream_name)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, cleanup: bool) -> None:
        """Stop; ``cleanup``: it is no longer wanted (module doc: what it declared upstream
        goes unless ``resource-cleanup-mode`` is ``never``). What it already published here
        is waited for (a few seconds at most) and acknowledged upstream first, and nothing
        more is forwarded meanwhile: a clean stop or restart moves nothing twice."""
        await self._drain()
        await self._cancel()
        if cleanup and self.upstream.resource_cleanup_mode != "never" and self.up is not None \
                and self.up.connection.is_open:
            try:
                self._ended = asyncio.get_running_loop().create_future()
                await asyncio.wait_for(self._clean_upstream(self.up.connection), 5)
            except (RunFailed, asyncio.TimeoutError) as exc:
                log.warning("%s: what it declared upstream was not deleted: %s",
                            self.describe, exc)
        await self._closed()

    async def _run(self) -> None:
        while True:
            self.state, self.error, self.timestamp = "starting", None, status_time()
            self._ended = asyncio.get_running_loop().create_future()
            try:
                await self._one_run()
                reason = "ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:        # the run's failure: logged, retried
                reason = str(exc) or type(exc).__name__
            log.warning("%s: %s; again in %ss", self.describe, reason,
                        self.upstream.reconnect_delay)
            self.state, self.error, self.timestamp = "error", reason, status_time()
            self._close()
            self.up = self.down = None
            await asyncio.sleep(self.upstream.reconnect_delay)

    async def _one_run(self) -> None:
        self.uri, self.up = await self._connect(self.upstream.uris, "upstream")
        # the upstream cancelled its consumer (its queue deleted): a new run sets up again
        self.up.add_on_cancel_callback(lambda _frame: self._end(RunFailed(
            "the upstream cancelled the link's consumer (its queue was deleted?)")))
        name = (self.up.connection.server_properties or {}).get("cluster_name")
        self.upstream_cluster = name.decode() if isinstance(name, bytes) else name
        _, self.down = await self._connect((self.registry.local_uri(self.vhost),), "local")
        if self.upstream.ack_mode == "on-confirm":
            await self._call(lambda cb: self.down.confirm_delivery(self._on_confirm,
                                                                   callback=cb))
        self._pending, self._seq = {}, 0
        await self._set_up()
        self.state, self.timestamp = "running", status_time()
        log.info("%s is running: %s", self.describe, self.uri.shown)
        await self._running()

    # ------------------------------------------------------------ forwarding
    def _forward(self, method, props, body, exchange: str, routing_key: str,
                 headers: dict) -> None:
        """Publish one upstream delivery here and settle it by ``ack-mode`` (stopping:
        nothing; it goes back to the upstream queue when the link's connection closes)."""
        if self._stopping:
            return
        props.headers = headers
        if not self.upstream.trust_user_id:
            props.user_id = None
        self.down.basic_publish(exchange, routing_key, body, props)
        mode = self.upstream.ack_mode
        if mode == "on-confirm":
            self._seq += 1
            self._pending[self._seq] = method.delivery_tag
        elif mode == "on-publish":
            self.up.basic_ack(method.delivery_tag)

    def _drop(self, method) -> None:
        """A delivery that must not be forwarded: acknowledged, as RabbitMQ does."""
        if self.upstream.ack_mode != "no-ack":
            self.up.basic_ack(method.delivery_tag)

    def _on_confirm(self, frame) -> None:
        self._confirmed(frame, self.up)

    async def _consume(self, queue: str, on_message, **kw) -> None:
        no_ack = self.upstream.ack_mode == "no-ack"
        if not no_ack:
            await self._call(lambda cb: self.up.basic_qos(
                prefetch_count=self.upstream.prefetch_count, callback=cb))
        await self._call(lambda cb: self.up.basic_consume(
            queue, on_message, auto_ack=no_ack, callback=cb, **kw))

    # ------------------------------------------------------------ status
    def status(self) -> dict:
        """As ``/api/federation-links`` lists it (RabbitMQ's keys and order)."""
        out = {"node": self.registry.node_name()}
        if self.kind == "exchange":
            out.update(exchange=self.name, upstream_exchange=self.upstream.exchange)
        else:
            out.update(queue=self.name, upstream_queue=self.upstream.queue,
                       consumer_tag=self.upstream.consumer_tag)
        out.update(type=self.kind, vhost=self.vhost, upstream=self.upstream.name, id=self.id,
                   status=self.state)
        if self.state == "running":
            out["local_connection"] = self.connection_name
        elif self.state == "error":
            out["error"] = self.error
        out.update(uri=self.uri.shown if self.uri is not None else
                   self.upstream.uris[0].shown, timestamp=self.timestamp)
        return out


class ExchangeLink(Link):
    """Federates exchange ``name`` from ``upstream`` (package doc)."""
    kind = "exchange"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.wanted: dict = {}          # the downstream's bindings: key -> (routing key, args)
        self.bound: dict = {}           # what is bound upstream: key -> (routing key, args)
        self._bindings_changed = asyncio.Event()
        self._suffix = "A"              # the internal exchange's: A or B (``_set_up``)
        self._internal: str | None = None       # its name upstream, once declared

    @property
    def queue(self) -> str:
        """The upstream queue (RabbitMQ's ``upstream_queue_name``)."""
        cluster = self.registry.cluster_name()
        part = ""
        if self.uri is not None and self.uri.vhost != self.vhost:
            part = f":{self.vhost}:{self.name}"
        elif self.upstream.exchange != self.name:
            part = f":{self.name}"
        return f"federation: {self.upstream.exchange} -> {cluster}{part}"

    def set_bindings(self, bindings: dict) -> None:
        """The downstream exchange's bindings now (``registry.bindings_of``)."""
        if bindings != self.wanted:
            self.wanted = bindings
            self._bindings_changed.set()

    async def _set_up(self) -> None:
        up, u = self.up, self.upstream
        conn = up.connection
        x = self.registry.exchange_info(self.vhost, self.name)
        if x is None:
            raise RunFailed("the downstream exchange is gone")
        reason = await self._probe(conn, lambda ch, cb: ch.exchange_declare(
            u.exchange, passive=True, callback=cb))
        if getattr(reason, "reply_code", None) == 404:
            await self._call(lambda cb: up.exchange_declare(
                u.exchange, x["type"], durable=x["durable"], auto_delete=x["auto_delete"],
                internal=x["internal"], arguments=x["arguments"] or None, callback=cb))
        elif hasattr(reason, "reply_code"):
            raise RunFailed(f"the upstream exchange '{u.exchange}': {reason}")
        args = {"x-internal-purpose": "federation"}
        if u.expires is not None:
            args["x-expires"] = u.expires
        if u.message_ttl is not None:
            args["x-message-ttl"] = u.message_ttl
        queue = self.queue
        await self._call(lambda cb: up.queue_declare(queue, durable=True, arguments=args,
                                                     callback=cb))
        await self._consume(queue, self._on_message)
        # the internal exchange: a new one beside the one a previous run left (it keeps
        # feeding the queue until the new one is bound), then the old one goes (RabbitMQ's
        # A/B suffixes; which is there is asked of the upstream, so a restart keeps it too)
        reason = await self._probe(conn, lambda ch, cb: ch.exchange_declare(
            f"{queue} B", passive=True, callback=cb))
        self._suffix, old = ("B", "A") if hasattr(reason, "reply_code") else ("A", "B")
        internal = self._internal = f"{queue} {self._suffix}"
        await self._probe(conn, lambda ch, cb: ch.exchange_delete(internal, callback=cb))
        purpose = {"x-internal-purpose": "federation"}
        xfu_args = {hops.MAX_HOPS: long(u.max_hops),      # RabbitMQ checks its type: long
                    hops.DOWNSTREAM_NAME: self.registry.cluster_name(),
                    hops.DOWNSTREAM_VHOST: self.vhost, **purpose}
        reason = await self._probe(conn, lambda ch, cb: ch.exchange_declare(
            internal, "x-federation-upstream", durable=True, internal=True, auto_delete=True,
            arguments=xfu_args, callback=cb))
        if getattr(reason, "reply_code", None) == 503:   # no such type: a fanout instead
            await self._call(lambda cb: up.exchange_declare(
                internal, "fanout", durable=True, internal=True, auto_delete=True,
                arguments=purpose, callback=cb))
        elif hasattr(reason, "reply_code"):
            raise RunFailed(f"declaring exchange '{internal}' upstream failed: {reason}")
        await self._call(lambda cb: up.queue_bind(queue, internal, "", callback=cb))
        self.bound = {}
        self.wanted = self.registry.bindings_of(self.vhost, self.name)     # as they are now
        await self._sync_bindings()
        await self._probe(conn, lambda ch, cb: ch.exchange_delete(f"{queue} {old}",
                                                                  callback=cb))

    async def _running(self) -> None:
        """Follow the downstream's bindings; every ``federation_check_interval`` make sure
        the internal exchange is still upstream (RabbitMQ's check: deleted there, nothing
        would reach the queue, so the run ends and the next sets up again)."""
        interval = self.registry.check_interval()
        while True:
            changed = asyncio.ensure_future(self._bindings_changed.wait())
            await asyncio.wait({changed, self._ended}, timeout=interval,
                               return_when=asyncio.FIRST_COMPLETED)
            if self._ended.done():
                changed.cancel()
                raise self._ended.exception()
            if not changed.done():
                changed.cancel()
                reason = await self._probe(self.up.connection, lambda ch, cb: ch.
                                           exchange_declare(self._internal, passive=True,
                                                            callback=cb))
                if getattr(reason, "reply_code", None) == 404:
                    raise RunFailed(f"the exchange '{self._internal}' is gone upstream")
                continue
            await self._sync_bindings()

    async def _sync_bindings(self) -> None:
        """Bind upstream what the downstream's bindings ask for, unbind what they no longer
        do (each with its ``x-bound-from``: ``hops.bound_upstream``)."""
        self._bindings_changed.clear()
        u, up = self.upstream, self.up
        want = {}
        for key, (routing_key, arguments) in self.wanted.items():
            args = hops.bound_upstream(
                arguments, u.max_hops, self.upstream_cluster,
                self.uri.vhost, self.registry.cluster_name(), self.vhost,
                f"{self.vhost}:{self.name} {self._suffix}")
            if args is not None:
                want[key] = (routing_key, args)
        for key in [k for k in self.bound if k not in want]:
            routing_key, args = self.bound.pop(key)
            await self._call(lambda cb: up.exchange_unbind(
                self._internal, u.exchange, routing_key, arguments=args, callback=cb))
        for key, (routing_key, args) in want.items():
            if key not in self.bound:
                await self._call(lambda cb: up.exchange_bind(
                    self._internal, u.exchange, routing_key, arguments=args, callback=cb))
                self.bound[key] = (routing_key, args)

    def _on_message(self, _ch, method, props, body) -> None:
        if not hops.should_forward(props.headers, self.upstream.max_hops,
                                   self.registry.cluster_name(), self.vhost):
            self._drop(method)
            return
        entry = hops.exchange_entry(self.uri.shown, self.name, method.redelivered,
                                    self.upstream_cluster, self.uri.vhost)
        self._forward(method, props, body, self.name, method.routing_key,
                      hops.received_from(props.headers, entry))

    async def _clean_upstream(self, conn) -> None:
        queue = self.queue
        await self._probe(conn, lambda ch, cb: ch.queue_delete(queue, callback=cb))
        if self._internal is not None:
            await self._probe(conn, lambda ch, cb: ch.exchange_delete(self._internal,
                                                                      callback=cb))


class QueueLink(Link):
    """Federates queue ``name`` from ``upstream``: consumes the upstream queue while
    ``set_running(True)`` (the registry's: the downstream queue has consumers and nothing
    ready), with priority -1 so that the upstream's own consumers go first."""
    kind = "queue"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.run = False
        self._run_changed = asyncio.Event()
        self._consuming = False

    def set_running(self, run: bool) -> None:
        if run != self.run:
            self.run = run
            self._run_changed.set()

    async def _set_up(self) -> None:
        q = self.registry.queue_info(self.vhost, self.name)
        if q is None:
            raise RunFailed("the downstream queue is gone")
        up, u = self.up, self.upstream
        reason = await self._probe(up.connection, lambda ch, cb: ch.queue_declare(
            u.queue, passive=True, callback=cb))
        if getattr(reason, "reply_code", None) == 404:
            await self._call(lambda cb: up.queue_declare(
                u.queue, durable=q["durable"], auto_delete=q["auto_delete"],
                arguments=q["arguments"] or None, callback=cb))
        elif hasattr(reason, "reply_code"):
            raise RunFailed(f"the upstream queue '{u.queue}': {reason}")
        if u.ack_mode != "no-ack":
            await self._call(lambda cb: up.basic_qos(prefetch_count=u.prefetch_count,
                                                     callback=cb))
        self._consuming = False

    async def _running(self) -> None:
        u, up = self.upstream, self.up
        while True:
            self._run_changed.clear()
            if self.run and not self._consuming:
                await self._call(lambda cb: up.basic_consume(
                    u.queue, self._on_message, auto_ack=u.ack_mode == "no-ack",
                    consumer_tag=u.consumer_tag, arguments={"x-priority": -1}, callback=cb))
                self._consuming = True
            elif not self.run and self._consuming:
                await self._call(lambda cb: up.basic_cancel(u.consumer_tag, callback=cb))
                self._consuming = False
            changed = asyncio.ensure_future(self._run_changed.wait())
            await asyncio.wait({changed, self._ended}, return_when=asyncio.FIRST_COMPLETED)
            if self._ended.done():
                changed.cancel()
                raise self._ended.exception()

    def _on_message(self, _ch, method, props, body) -> None:
        entry = {"uri": self.uri.shown, "queue": self.name, "redelivered": method.redelivered}
        self._forward(method, props, body, "", self.name, hops.queue_headers(
            props.headers, entry, method.exchange, method.routing_key))

    async def _clean_upstream(self, conn) -> None:
        """A queue link declared nothing of its own upstream."""

