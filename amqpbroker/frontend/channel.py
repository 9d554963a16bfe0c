"""One AMQP channel of a connection: publish routing, consumers, deliveries, acks, confirms, tx.

Handlers raise ``AMQPError``; the session (the single error boundary) turns them into
``channel.close`` or ``connection.close``. Methods are dispatched by pamqp class name through
the ``HANDLERS`` table at the bottom of the file.
"""
from __future__ import annotations

import base64
import logging
import os
import re
import uuid
from collections import deque
from itertools import count, repeat, takewhile

from pamqp import commands as C

from .. import errors
from ..contract import PUB_LATEST, PUB_PRODUCER, PUB_SUBSEQUENCE
from .confirms import Confirms
from .consumer import Consumer
from .exchange import (DEDUP_HEADER, DEDUP_TYPE, DeduplicationExchange, PartitionedExchange,
                       delay_of, with_hash_property)
from . import events, group_member, trace
from .adapters import AMQP10
from .metadata_copy import run_now
from .partition_client import WINDOW
from ..protocol import fastpath as fp
from ..protocol import properties as props_mod
from ..queue_args import (MAX_EXPIRY, amqp_type, check_stream_consume,
                          quorum_delete_refusal)
from ..storage.record import RecordRun, new_record, now_ms
from ..stats.counters import FOLD_EVERY

log = logging.getLogger("amqpbroker.channel")

# a consumer without prefetch: credit goes back to its host when the host holds this or less
CREDIT_LOW = WINDOW // 2
# the cid, qid and redelivered flag of every delivery of a run, for ``deliver_run``'s zip
_ZEROS, _NOT_REDELIVERED = repeat(0), repeat(False)

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."
REPLY_TOKEN = re.compile(r"\d+\.[0-9a-f]{32}")        # front-end index . uuid (Session)
EXPIRATION = re.compile(r"([+-]?[0-9]+)(.*)", re.DOTALL)


class _NotHeld:
    """The confirm ticket of a delayed message the owner could not hold: settled, refused
    (``confirms.py``'s host interface)."""
    reached = staticmethod(lambda number: True)
    take_nack = staticmethod(lambda number: True)
    listeners = property(lambda self: set())        # nothing to wait for


NOT_HELD = _NotHeld()


def _expiration_problem(text: str) -> str | None:
    """What RabbitMQ's parse_expiration says of an expiration property (Erlang-printed, as in
    its reply text), or None if it is a valid number of milliseconds."""
    m = EXPIRATION.fullmatch(text)
    if m is None:
        return "no_integer"
    if m.group(2):
        return f"{{leftover_string,{errors.erl_string(m.group(2))}}}"
    n = int(m.group(1))
    if n < 0:
        return f"{{value_negative,{n}}}"
    if n > MAX_EXPIRY:
        return f"{{value_too_large,{n}}}"
    return None


def _random_suffix() -> str:
    """22 characters, as RabbitMQ's ``amq.gen-`` names (16 random bytes, url-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


# An unacked delivery is a tuple (queue, offset, consumer, epoch): which queue and offset, for
# which consumer (None: basic.get), and the host's epoch (a delivery from before a worker
# restart is void: the queue has it back). A tuple, not an object: one is built per delivery
# (a slotted class's __init__ costs several times a tuple's display), and only ``_settle``
# reads them, by unpacking.


class Channel:
    def __init__(self, session, number: int):
        self.session = session
        self.broker = session.broker
        self.number = number
        self.next_tag = 1
        self.unacked: dict[int, tuple] = {}    # tag -> delivery
        self.consumers: dict = {}      # Consumer.key (its tag; (tag, partition) for the
        #                                 shares of a consumer group member) -> Consumer
        self.groups: dict[str, group_member.GroupMember] = {}     # tag -> group member
        self.prefetch = 0              # basic.qos global=false: for consumers created later
        self.global_prefetch = 0       # basic.qos global=true: shared by the channel
        self.confirm = False
        self.confirms = Confirms()
        self.held: deque = deque()    # deliveries over the global prefetch, not yet sent
        self.tx: list | None = None
        self.last_queue: str | None = None
        self.closed = False
        self.reply_consumer: Consumer | None = None
        # queues this channel is deleting: the basic.cancel of its own consumers there waits
        # until delete-ok is sent, the order RabbitMQ answers in (kombu relies on it)
        self.deleting: dict = {}       # QueueRef -> [Consumer] cancelled meanwhile
        self.stats = self.broker.stats.channel(self)     # amqpbroker/stats

    # ============================================================ publish
    def on_publish(self, ev):
        if ev.immediate:
            raise errors.NotImplemented_("immediate=true", 60, 40)
        if self.tx is not None:
            self._check_publish(ev)
            if ev.scan.has_headers:
                self._decode_headers(ev.properties, ev.scan)    # at publish, not commit
            self.tx.append(("publish", ev, False))
            return None
        return self._publish(ev)

    def _check_publish(self, ev):
        """basic.publish's checks, in RabbitMQ's order (the body size was checked with the
        content header): write permission, the exchange, internal, the direct reply-to
        consumer, user_id, expiration. In a transaction they run at publish, not at commit."""
        session = self.session
        vhost = session.vhost
        if ev.exchange not in session.write_ok:
            self.broker.users.check(session.user, vhost.name, "write", "exchange", ev.exchange,
                                    60, 40)
            session.write_ok.add(ev.exchange)
        ex = vhost.exchanges.get(ev.exchange)
        if ex is None:
            raise errors.NotFound(f"no exchange '{ev.exchange}' in vhost '{vhost.name}'", 60, 40)
        if ex.internal:
            raise errors.AccessRefused(f"cannot publish to internal exchange '{ev.exchange}' in "
                                       f"vhost '{vhost.name}'", 60, 40)
        users = self.broker.users
        if users.topic_permissions or session.user.grants is not None:
            users.check_topic(session.user, vhost.name, "write", ex, ev.routing_key, 60, 40)
        scan = ev.scan
        if scan.reply_to == REPLY_TO and self.reply_consumer is None:
            raise errors.PreconditionFailed("fast reply consumer does not exist", 60, 40)
        if scan.user_id is not None and scan.user_id != session.user.name \
                and "impersonator" not in session.user.tags:
            raise errors.PreconditionFailed(f"user_id property set to '{scan.user_id}' but "
                                            f"authenticated user was '{session.user.name}'",
                                            60, 40)
        if scan.expiration is not None:
            problem = _expiration_problem(scan.expiration)
            if problem is not None:
                raise errors.PreconditionFailed(
                    f"invalid expiration '{scan.expiration}': {problem}", 60, 40)
        return ex

    def _publish(self, ev):
        """Route and hand on a message; returns None, or a coroutine for the session to
        drive when the route needs the metadata owner (a de-duplication exchange, a delayed
        one)."""
        ex = self._check_publish(ev)
        session = self.session
        scan = ev.scan
        raw = ev.properties
        routing_key = ev.routing_key
        keys = (routing_key,)
        headers = props = None
        flags = 0
        if scan.has_headers:
            headers = self._decode_headers(raw, scan)
            if "x-producer-id" in headers:
                flags = PUB_PRODUCER        # the worker checks x-sequence (worker/dedup.py)
                if session.protocol == "stream":
                    flags |= PUB_LATEST     # a stream-protocol publisher's numbers
            if "CC" in headers or "BCC" in headers:
                keys = (routing_key, *props_mod.str_list(headers.get("CC")),
                        *props_mod.str_list(headers.get("BCC")))
                if "BCC" in headers:
                    headers = dict(headers)
                    del headers["BCC"]
                    raw = props_mod.rewrite(raw, drop_headers=("BCC",))
        if scan.reply_to == REPLY_TO:
            raw = props_mod.rewrite(raw, reply_to=REPLY_TO_PREFIX + session.reply_token)
        clock = session.clock_ms
        if clock <= 0:                      # the read's first publish (-1), or outside one (0)
            clock = now_ms()
            if session.clock_ms:
                session.clock_ms = clock    # the read's other publishes share it
        record = new_record((clock, ev.exchange, routing_key, raw, ev.body,
                             1 if scan.delivery_mode == 2 else 0))
        if ev.exchange == "" and routing_key.startswith(REPLY_TO_PREFIX):
            routed = self._deliver_direct_reply(routing_key[len(REPLY_TO_PREFIX):], record)
            if not routed and ev.mandatory:
                self._return(312, "NO_ROUTE", record)
            self._confirm(())
            return
        if ex.delays:
            delay = delay_of(headers)
            if delay is not None:
                return self._publish_delayed(ev, ex, keys, record, flags, delay)
        if ex.type == DEDUP_TYPE:
            message_id = (props or self._decode_properties(raw)).message_id
            key, ttl = DeduplicationExchange.key_of(
                DeduplicationExchange.route_headers(headers, message_id))
            if key is not None:             # one cache for the node: the owner's
                return self._publish_deduplicated(ev, ex, keys, headers, record, flags, key,
                                                  ttl)
        elif ex.type == "x-partitioned":
            flags |= PUB_SUBSEQUENCE        # a partition sees some of the producer's numbers
        elif ex.hash_property is not None:     # a consistent-hash exchange's
            headers = with_hash_property(ex, headers, props or self._decode_properties(raw))
        elif ex.keeps_history and ex.keeps(headers):    # the owner keeps its history
            run_now(self.broker.metadata.keep_recent(vhost=session.vhost.name,
                                                     exchange=ex.name, record=record))
        self._send(ev, ex, keys, session.vhost.route(ex, keys, headers), record, flags)

    async def _publish_deduplicated(self, ev, ex, keys, headers, record, flags, key, ttl):
        """Through an x-message-deduplication exchange: the metadata owner says whether the
        key is a duplicate (at once in one process; one round trip from a front-end), then
        the message goes on as any other, routed with its key taken off (it was checked)."""
        vhost = self.session.vhost
        duplicate = await self.broker.metadata.dedup_seen(vhost=vhost.name, exchange=ex.name,
                                                          key=key, ttl=ttl)
        if self.closed:
            return
        if duplicate:
            queues = ()
        else:
            unkeyed = {k: v for k, v in (headers or {}).items() if k != DEDUP_HEADER}
            queues = vhost.route(ex, keys, unkeyed)
        self._send(ev, ex, keys, queues, record, flags)

    async def _publish_delayed(self, ev, ex, keys, record, flags, delay):
        """Through an x-delayed-message exchange with a positive ``x-delay``: the metadata
        owner holds the message (``supervisor/delayed.py``), and it is confirmed once held
        on disk (nacked if the disk refused it). Never returned as unroutable: where it goes
        is known when it is due (the plugin returns a mandatory one at once)."""
        try:
            await self.broker.metadata.delay_message(
                vhost=self.session.vhost.name, exchange=ex.name, keys=list(keys),
                record=record, priority=ev.scan.priority or 0, delay=delay)
            held = True
        except (OSError, errors.AMQPError) as exc:
            log.error("a message for delayed exchange '%s' was not held: %s", ex.name, exc)
            held = False
        if self.closed:
            return
        if self.session.vhost.tracing:
            trace.published(self, record, keys, ())     # routed when due
        self.stats.on_publish(ex, 1, ev.mandatory, len(ev.body))
        if self.confirm:
            self._confirm(() if held else ((NOT_HELD, 0),))

    def _send(self, ev, ex, keys, queues, record, flags) -> None:
        """Hand a message routed by ``keys`` to its queues (or return it), then confirm."""
        session = self.session
        if session.vhost.tracing:           # the firehose (trace.py)
            trace.published(self, record, keys, queues)
        confirm = self.confirm
        stats = self.stats
        if ex is stats.exchange and queues:     # counted per batch (amqpbroker/stats)
            pending = stats.pending
            pending.append(len(ev.body))
            if len(pending) >= FOLD_EVERY:
                stats.fold_pending()
        else:
            stats.on_publish(ex, len(queues), ev.mandatory, len(ev.body))
        tickets = []
        if not queues:
            if ev.mandatory:
                self._return(312, "NO_ROUTE", record)
        elif len(queues) == 1:
            for q in queues:
                client = q.client                   # QueueRef.publish, one call less
                n = client.publish(q.qid, record, ev.scan.priority, confirm, flags)
                if confirm:
                    tickets.append((client, n))
                if q.backlogged:
                    session.throttle(q)
                elif client.backlogged:
                    session.throttle(client)
        else:
            # a fanout: the queues of one host take the message as one publish
            # (``PartitionClient.publish_routed``)
            priority = ev.scan.priority
            by_client: dict = {}
            for q in queues:
                by_client.setdefault(q.client, []).append(q)
            for client, refs in by_client.items():
                n = client.publish_routed(tuple([q.qid for q in refs]), record, priority,
                                          confirm, flags)
                if n is None:                       # a number per queue (a ring link)
                    for q in refs:
                        n = client.publish(q.qid, record, priority, confirm, flags)
                        if confirm:
                            tickets.append((client, n))
                elif confirm:
                    tickets.append((client, n))
                for q in refs:
                    if q.backlogged:
                        session.throttle(q)
                    elif client.backlogged:
                        session.throttle(client)
        if confirm:
            self._confirm(tickets)

    def _decode_properties(self, raw: bytes):
        """The whole property list; one that cannot be decoded (a headers table with an
        unknown field type) is a frame error, as an undecodable method is."""
        try:
            return props_mod.decode(raw)
        except ValueError as exc:
            raise errors.FrameError(f"cannot decode content header on channel {self.number}: "
                                    f"{exc}", 60, 40) from None

    def _decode_headers(self, raw: bytes, scan) -> dict:
        """The headers table, all that routing reads (``props_mod.headers_of``), kept on the
        publish's ``scan`` (shared by the messages with the same properties: read-only); one
        that cannot be decoded is a frame error, as in ``_decode_properties``."""
        if scan.headers is None:
            try:
                scan.headers = props_mod.headers_of(raw)
            except ValueError as exc:
                raise errors.FrameError(f"cannot decode content header on channel "
                                        f"{self.number}: {exc}", 60, 40) from None
        return scan.headers

    def _deliver_direct_reply(self, token: str, record) -> bool:
        server = self.session.server
        target = server.reply_to.get(token)
        if target is None:
            if self.broker.forward_reply is not None \
                    and not token.startswith(server.token_prefix):
                self.broker.forward_reply(token, record)   # another front-end's connection
                return True
            return False
        channel, consumer = target
        channel.deliver_direct(consumer, record)
        return True

    def _return(self, code: int, text: str, record) -> None:
        self.session.write(fp.build_return(self.number, code, text, record.exchange,
                                           record.routing_key, record.properties, record.body,
                                           self.session.conn.frame_max))

    # ============================================================ confirms
    def _confirm(self, tickets) -> None:
        """The next publish is confirmed once every host it went to has it (``confirms.py``)."""
        if not self.confirm:
            return
        marks = self.session.settled_on
        if marks:
            # acks this connection sent before are durable before this confirm (one group
            # commit per worker covers both, but the acks may be on another worker)
            tickets = [*tickets, *marks.items()]
            for client, number in marks.items():
                client.want(number)
            marks.clear()
        self.confirms.insert(tickets)
        self.on_commit()
        if self.confirms:
            for client, _ in tickets:
                client.listeners.add(self)

    def on_commit(self) -> None:
        """A host's confirm watermark moved: send what is settled, in order."""
        settled = self.confirms.take_settled()
        if settled:
            self.stats.on_confirms(settled)
            number = self.number
            self.session.write([fp.build_confirm(number, seq, multiple, nack=not ack)
                                for seq, multiple, ack in settled])
        if not self.confirms:
            self._stop_listening()

    def _stop_listening(self) -> None:
        for client in self.broker.partitions:
            client.listeners.discard(self)

    # ============================================================ delivery
    def deliver(self, consumer: Consumer, offset: int, record, redelivered: bool) -> None:
        """A delivery from the consumer's queue host (it spent one credit on it)."""
        consumer.credit_out -= 1
        if self.global_prefetch and not consumer.no_ack \
                and len(self.unacked) >= self.global_prefetch:
            self.held.append((consumer, offset, record, redelivered))
            return
        self._send_delivery(consumer, offset, record, redelivered)

    def deliver_many(self, consumer: Consumer, dlvs: list) -> None:
        """``deliver`` for each of ``dlvs`` (``contract.Dlv``, in order), in one loop and one
        write (``_send_lot``)."""
        if self.global_prefetch or consumer.partition is not None or consumer.queue.is_stream \
                or self.session.vhost.tracing:
            for d in dlvs:
                self.deliver(consumer, d.offset, d.record, d.redelivered)
            return
        self._send_lot(consumer, dlvs, len(dlvs))

    def deliver_run(self, consumer: Consumer, offset: int, records: list) -> None:
        """``deliver`` for each of ``records``, at ``offset``, ``offset + 1``, ..., none a
        redelivery: a run the host sent as one (``contract.Dlvs``), in one loop and one
        write (``_send_lot``), with no object per delivery on the way."""
        if self.global_prefetch or consumer.partition is not None or self.session.vhost.tracing:
            for i, rec in enumerate(records):
                self.deliver(consumer, offset + i, rec, False)
            return
        if consumer.queue.is_stream:
            self._send_stream_run(consumer, offset, records)
            return
        if type(records) is RecordRun:      # as a ring or TCP link decoded it: frames in C
            self._send_run(consumer, offset, records)
            return
        # the shape of a ``Dlv`` (cid, qid, offset, redelivered, record), built by zip
        self._send_lot(consumer, zip(_ZEROS, _ZEROS, count(offset), _NOT_REDELIVERED, records),
                       len(records))

    def _send_stream_run(self, consumer: Consumer, offset: int, records) -> None:
        """``_send_delivery`` for a run of a stream's records at ``offset``, ``offset + 1``,
        ...: each with the stream's headers (``x-stream-offset``, and ``x-stream-timestamp``
        for the stream protocol's chunks), the unacked entries added by one ``dict.update``,
        in one write."""
        session = self.session
        tag = self.next_tag
        if session.direct is not None:      # a stream protocol adapter of this process
            self._sent_run(consumer, offset, len(records), None)
            session.direct.deliver_stream_run(self.number, tag, offset, records)
            return
        frame_max = session.conn.frame_max
        number = self.number
        ctag = consumer.tag_bytes
        build = fp.build_deliver
        chunks = session.protocol == "stream"
        frames: list = []
        for i, rec in enumerate(records):
            frames += build(number, ctag, tag + i, False, rec.exchange, rec.routing_key,
                            _stream_properties(rec, offset + i, chunks), rec.body, frame_max)
        self._sent_run(consumer, offset, len(records), frames)

    def _send_run(self, consumer: Consumer, offset: int, run: RecordRun) -> None:
        """``_send_lot`` for a run still in its records' bytes: every frame of the run built by
        one C call from those bytes (``fastpath.build_deliver_run``), the unacked entries
        added by one ``dict.update`` (each tag's (queue, offset, consumer, epoch), as
        ``_send_lot`` adds them): no Python object or bytecode per delivery but the entry."""
        frames = fp.build_deliver_run(self.number, consumer.tag_bytes, self.next_tag,
                                      run.data, run.count, self.session.conn.frame_max,
                                      fp.COPY_BODY_BELOW)
        self._sent_run(consumer, offset, run.count, frames)

    def _sent_run(self, consumer: Consumer, offset: int, n: int, frames: list) -> None:
        """The ``n`` deliveries of a run, tagged from ``next_tag`` on and built as
        ``frames``: their unacked entries (each tag's (queue, offset, consumer, epoch))
        added by one ``dict.update``, the frames written, the credit spent."""
        tag = self.next_tag
        if consumer.no_ack:
            self.stats.deliver_no_ack += n
        else:
            q = consumer.queue
            self.unacked.update(zip(range(tag, tag + n),
                                    zip(repeat(q), count(offset), repeat(consumer),
                                        repeat(q.client.epoch))))
            consumer.unacked += n
        self.next_tag = tag + n
        if frames is not None:              # None: handed over direct (_send_stream_run)
            self.session.write(frames)
        self._spend_credit(consumer, n)

    def _send_lot(self, consumer: Consumer, dlvs, n: int) -> None:
        """What ``_send_delivery`` does per message, for ``n`` deliveries (``dlvs``: tuples
        of a ``Dlv``'s shape) to a consumer of a queue (not a stream's, nor a group
        member's) on a channel without a global prefetch."""
        session = self.session
        frame_max = session.conn.frame_max
        number = self.number
        ctag = consumer.tag_bytes
        build = fp.build_deliver
        # a small body's frames are one bytes object from C: called here, not through
        # ``build_deliver`` (which does the same), one call less per message
        build_c = fp._build_deliver_c
        small = fp.COPY_BODY_BELOW if build_c is not None else 0
        tag = self.next_tag
        frames: list = []
        append = frames.append
        redelivered_n = 0
        if consumer.no_ack:
            for _, _, offset, redelivered, rec in dlvs:
                body = rec.body
                if len(body) < small:       # one bytes object, from C
                    append(build_c(number, ctag, tag, redelivered, rec.exchange,
                                   rec.routing_key, rec.properties, body, frame_max))
                else:
                    frames += build(number, ctag, tag, redelivered, rec.exchange,
                                    rec.routing_key, rec.properties, body, frame_max)
                tag += 1
                if redelivered:
                    redelivered_n += 1
            self.stats.deliver_no_ack += n
        else:
            q = consumer.queue
            epoch = q.client.epoch
            unacked = self.unacked
            for _, _, offset, redelivered, rec in dlvs:
                unacked[tag] = (q, offset, consumer, epoch)
                body = rec.body
                if len(body) < small:
                    append(build_c(number, ctag, tag, redelivered, rec.exchange,
                                   rec.routing_key, rec.properties, body, frame_max))
                else:
                    frames += build(number, ctag, tag, redelivered, rec.exchange,
                                    rec.routing_key, rec.properties, body, frame_max)
                tag += 1
                if redelivered:
                    redelivered_n += 1
            consumer.unacked += n
        self.next_tag = tag
        if redelivered_n:
            self.stats.redeliver += redelivered_n
        session.write(frames)
        self._spend_credit(consumer, n)

    def _spend_credit(self, consumer: Consumer, n: int) -> None:
        """The credit of ``n`` deliveries just written (``_send_lot``, ``_send_run``)."""
        session = self.session
        if consumer.no_ack or not (consumer.prefetch or self.global_prefetch):
            # the credit rule of ``_send_delivery``, message by message
            writable = session.writable
            for _ in range(n):
                consumer.credit_out -= 1
                consumer.owed += 1
                if consumer.credit_out <= CREDIT_LOW and writable:
                    self._grant(consumer, consumer.owed)
                    consumer.owed = 0
        else:
            consumer.credit_out -= n

    def _send_delivery(self, consumer: Consumer, offset: int, record, redelivered: bool) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        session = self.session
        # the delivery is counted by its tag (amqpbroker/stats): only the no-ack ones and
        # redeliveries are told apart here
        if not consumer.no_ack:
            q = consumer.queue
            self.unacked[tag] = (q, offset, consumer, q.client.epoch)
            consumer.unacked += 1
        else:
            self.stats.deliver_no_ack += 1
        if redelivered:
            self.stats.redeliver += 1
        if session.direct is not None and consumer.queue.is_stream \
                and consumer.partition is None:     # handed over, as _send_stream_run does
            session.direct.deliver_stream_run(self.number, tag, offset, (record,))
        else:
            properties = record.properties
            if consumer.partition is not None:  # a consumer group's: partition and offset
                properties = props_mod.with_group_headers(properties, consumer.partition,
                                                          offset)
            elif consumer.queue.is_stream:
                properties = _stream_properties(record, offset, session.protocol == "stream")
            session.write(fp.build_deliver(
                self.number, consumer.tag_bytes, tag, redelivered, record.exchange,
                record.routing_key, properties, record.body, session.conn.frame_max))
        if session.vhost.tracing:
            trace.delivered(self, consumer.queue.name, record, redelivered)
        if consumer.no_ack or not (consumer.prefetch or self.global_prefetch):
            # credit comes back with the writes, in lots once the host holds half its
            # window or less: a lone delivery sends no Credit (in the split layout, a
            # wake-up of the worker per message). Not while the socket is full:
            # resume_writing pays it back.
            consumer.owed += 1
            if consumer.credit_out <= CREDIT_LOW and session.writable:
                self._grant(consumer, consumer.owed)
                consumer.owed = 0

    def _grant(self, consumer: Consumer, n: int) -> None:
        consumer.credit_out += n
        consumer.queue.client.grant(consumer, n)

    def _share_global_credit(self) -> None:
        """basic.qos global: the channel's prefetch is shared by its consumers; hand out what
        is free one credit at a time, in turn, within each consumer's own prefetch."""
        limited = [c for c in self.consumers.values() if c.queue is not None and not c.no_ack]
        free = self.global_prefetch - len(self.unacked) - sum(c.credit_out for c in limited)
        while free > 0:
            granted = False
            for c in limited:
                if free <= 0:
                    break
                if c.prefetch and c.unacked + c.credit_out >= c.prefetch:
                    continue
                self._grant(c, 1)
                free -= 1
                granted = True
            if not granted:
                break

    def deliver_direct(self, consumer: Consumer, record) -> None:
        """Direct reply-to: no queue, no ack, no credit."""
        tag = self.next_tag
        self.next_tag = tag + 1
        self.stats.direct += 1              # takes a tag, is not counted as a delivery
        self.session.write(fp.build_deliver(
            self.number, consumer.tag_bytes, tag, False, record.exchange.encode(),
            record.routing_key.encode(), record.properties, record.body,
            self.session.conn.frame_max))

    def pay_owed_credit(self) -> None:
        """The socket drained: return the credit held back while it was full."""
        for c in self.consumers.values():
            if c.owed and c.queue is not None:
                self._grant(c, c.owed)
                c.owed = 0

    def _release_held(self) -> None:
        held = self.held
        while held and len(self.unacked) < self.global_prefetch:
            self._send_delivery(*held.popleft())
        if held and not self.global_prefetch:
            while held:
                self._send_delivery(*held.popleft())

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The queue went away: tell the client (consumer_cancel_notify)."""
        if consumer.member is not None:
            self._group_share_cancelled(consumer)
            return
        if self.consumers.pop(consumer.tag, None) is None:
            return
        waiting = self.deleting.get(consumer.queue)
        if waiting is not None:
            waiting.append(consumer)        # after our delete-ok
            return
        self._notify_cancel(consumer)

    def _notify_cancel(self, consumer: Consumer) -> None:
        if self.session.capabilities.get("consumer_cancel_notify") and not self.closed:
            self.session.send_method(self.number, C.Basic.Cancel(consumer_tag=consumer.tag,
                                                                 nowait=True))

    # ============================================================ acks
    def on_ack(self, ev) -> None:
        if not ev.multiple and self.tx is None and not self.global_prefetch:
            d = self.unacked.get(ev.delivery_tag)
            if d is not None and d[2] is not None and d[2].member is None:
                del self.unacked[ev.delivery_tag]
                self.stats.on_ack(1)
                self._ack_one(*d)
                return
        taken = self._take(ev.delivery_tag, ev.multiple, 60, 80)
        self.stats.on_ack(len(taken))
        if self.tx is not None:
            self.tx.append(("ack", taken, False))       # settled on commit
        else:
            self._settle(taken, ack=True)

    def on_nack(self, ev) -> None:
        taken = self._take(ev.delivery_tag, ev.multiple, 60, 120)
        if self.tx is not None:
            self.tx.append(("nack", taken, ev.requeue))
        else:
            self._settle(taken, ack=False, requeue=ev.requeue)

    def on_modify(self, ev) -> None:
        """basic.modify (ours: the AMQP 1.0 adapter's ``modified`` outcome, protocol/
        constants.py): a reject of one delivery whose message goes on with new properties
        (a quorum queue keeps them, worker/quorum.py)."""
        taken = self._take(ev.delivery_tag, False, 60, 200)
        if self.tx is not None:
            self.tx.append(("nack", taken, ev.requeue))
        else:
            self._settle(taken, ack=False, requeue=ev.requeue, properties=ev.properties)

    def _take(self, tag: int, multiple: bool, cid: int, mid: int) -> list:
        """Remove and return [(tag, delivery)] for an ack/nack; unknown tag is 406."""
        unacked = self.unacked
        if multiple:
            if tag != 0 and tag not in unacked:
                raise errors.PreconditionFailed(f"unknown delivery tag {tag}", cid, mid)
            if not tag:
                taken = list(unacked.items())
                unacked.clear()
                return taken
            # tags were inserted in increasing order: one pass over the head of the dict (a
            # next(iter()) per tag rescans the entries popped before it: quadratic), in C
            upto = list(takewhile(tag.__ge__, unacked))
            pop = unacked.pop
            return [(t, pop(t)) for t in upto]
        d = unacked.pop(tag, None)
        if d is None:
            raise errors.PreconditionFailed(f"unknown delivery tag {tag}", cid, mid)
        return [(tag, d)]

    def _ack_one(self, q, offset: int, c, epoch) -> None:
        """``_settle`` of one ack (not multiple, outside a transaction, on a channel without
        a global prefetch) of a delivery to a consumer of a queue (not a group member's
        share): a lone message's ack, without the runs and dicts of many."""
        live = epoch == q.client.epoch and not q.deleted
        c.unacked -= 1
        if c.credit_on_ack and live and self.consumers.get(c.key) is c:
            self._grant(c, 1)
        if live:                            # ``QueueRef.ack``, one call less
            client = q.client
            self.session.settled_on[client] = client.ack(q.qid, [offset])
        if self.held:
            self._release_held()

    def _settle(self, taken: list, ack: bool, requeue: bool = False,
                properties: bytes | None = None) -> None:
        by_queue: dict = {}
        by_share: dict = {}
        shared = self.global_prefetch
        # runs of deliveries of one consumer, queue and epoch (a multiple ack is usually one
        # run): the accounting and the credit are per run, the offsets keep the tags' order
        runs = []
        run = None
        for _, (q, offset, c, epoch) in taken:
            if run is None or c is not run[0] or q is not run[1] or epoch != run[2]:
                run = (c, q, epoch, [])
                runs.append(run)
            run[3].append(offset)
        for c, q, epoch, offsets in runs:
            live = epoch == q.client.epoch and not q.deleted
            if c is not None:
                c.unacked -= len(offsets)
                if c.credit_on_ack and not shared and live and self.consumers.get(c.key) is c:
                    self._grant(c, len(offsets))
                if c.member is not None:
                    if live:
                        by_share.setdefault(c, []).extend(offsets)
                    continue
            if live:
                by_queue.setdefault(q, []).extend(offsets)
        marks = self.session.settled_on
        for q, offsets in by_queue.items():
            if ack:
                marks[q.client] = q.ack(offsets)
            elif properties is None:
                marks[q.client] = q.reject(offsets, requeue)
            else:                           # on_modify's: one delivery
                marks[q.client] = q.modify(offsets[0], requeue, properties)
        if by_share:                # a consumer group's: its commit follows (GroupSettle)
            kind = 0 if ack else 1 if requeue else 2
            for c, offsets in by_share.items():
                client = c.queue.client
                marks[client] = client.settle_group(c.cid, kind, offsets)
        if self.held:
            self._release_held()
        if shared and not self.closed:
            self._share_global_credit()

    def requeue_all(self) -> None:
        """Channel closed or basic.recover: unacked messages go back, flagged redelivered."""
        held, self.held = self.held, deque()
        taken = list(self.unacked.items())
        self.unacked.clear()
        self._settle(taken, ack=False, requeue=True)
        by_queue: dict = {}
        for c, offset, _, _ in held:
            by_queue.setdefault(c.queue, []).append(offset)
        for q, offsets in by_queue.items():
            if not q.deleted:
                q.reject(offsets, True)

    # ============================================================ close
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stats.on_close()
        for c in list(self.consumers.values()):
            self._remove_consumer(c)
            self._consumer_event("consumer.deleted", c)
        self.consumers.clear()
        for member in self.groups.values():     # static members keep their partitions
            member.leave(permanent=False)       # for the session timeout
        self.groups.clear()
        self.requeue_all()
        self.tx = None
        self.confirms.clear()
        self._stop_listening()
        if events.on(self.broker):
            events.session_emit(self.session, "channel.closed",
                                {"pid": events.channel_name(self)})

    def _consumer_event(self, key: str, c: Consumer) -> None:
        """consumer.created / consumer.deleted (events.py) of a queue's consumer."""
        if not events.on(self.broker) or c is self.reply_consumer or c.queue is None \
                or c.member is not None:
            return
        details = {"consumer_tag": c.tag, "queue": c.queue.name,
                   "vhost": self.session.vhost.name, "channel": events.channel_name(self)}
        if key == "consumer.created":
            details.update(exclusive=c.exclusive, ack_required=not c.no_ack,
                           prefetch_count=c.prefetch, arguments=dict(c.arguments or {}))
        events.session_emit(self.session, key, details)

    def _remove_consumer(self, c: Consumer) -> None:
        if c is self.reply_consumer:
            self.session.server.reply_to.pop(self.session.reply_token, None)
            self.reply_consumer = None
            return
        c.queue.unsubscribe(c)

    # ============================================================ cold-path methods
    def _queue_name(self, name: str, cid: int, mid: int) -> str:
        if name:
            return name
        if self.last_queue is None:
            raise errors.NotFound("no previously declared queue", cid, mid)
        return self.last_queue

    def _check(self, kind: str, resource: str, name: str, cid: int, mid: int) -> None:
        s = self.session
        self.broker.users.check(s.user, s.vhost.name, kind, resource, name, cid, mid)

    def _check_binding_key(self, source: str, key: str, cid: int, mid: int) -> None:
        """A binding made or removed from a topic exchange: the user's topic permission
        (read) on its key, if the exchange exists (if not, the bind answers 404 later)."""
        s = self.session
        ex = s.vhost.exchanges.get(source)
        if ex is not None:
            self.broker.users.check_topic(s.user, s.vhost.name, "read", ex, key, cid, mid)

    def _check_reference(self, arguments, key: str, kind: str, name: str, cid, mid) -> None:
        """A new queue's dead-letter exchange or a new exchange's alternate exchange: a string,
        read on the new one and write on the one it names (RabbitMQ's r_arg checks)."""
        target = (arguments or {}).get(key)
        if target is None:
            return
        if not isinstance(target, str):
            raise errors.PreconditionFailed(
                f"invalid type '{amqp_type(target)}' for arg '{key}' in {kind} '{name}' in "
                f"vhost '{self.session.vhost.name}'", cid, mid)
        self._check("read", kind, name, cid, mid)
        self._check("write", "exchange", target, cid, mid)

    def channel_flow(self, m) -> None:
        """Client-initiated flow: RabbitMQ supports only active=true (a no-op); pausing
        deliveries is done with basic.qos, and active=false is 540 NOT_IMPLEMENTED."""
        if not m.active:
            raise errors.NotImplemented_("active=false", 20, 20)
        self.session.send_method(self.number, C.Channel.FlowOk(active=True))

    def channel_flow_ok(self, m) -> None:
        pass

    async def exchange_declare(self, m) -> None:
        self.session.vhost.check_exchange_declare(m.exchange, m.exchange_type, m.passive)
        if not m.passive:
            self._check("configure", "exchange", m.exchange, 40, 10)
            if m.exchange not in self.session.vhost.exchanges:
                self._check_reference(m.arguments, "alternate-exchange", "exchange", m.exchange,
                                      40, 10)
                if m.exchange_type == PartitionedExchange.type:
                    self._check_topic(m.exchange, (m.arguments or {}).get("x-partitions"))
        await self.broker.metadata.declare_exchange(
            vhost=self.session.vhost.name, name=m.exchange, type=m.exchange_type,
            passive=m.passive, durable=m.durable, auto_delete=m.auto_delete,
            internal=m.internal, arguments=m.arguments, actor=self.session.user.name)
        if not m.nowait:
            self.session.send_method(self.number, C.Exchange.DeclareOk())

    def _check_topic(self, name: str, partitions) -> None:
        """A topic makes and binds its partitions: as RabbitMQ's super-stream creation,
        read on the exchange, configure and write on each partition queue (a bad count is
        the supervisor's 406)."""
        if isinstance(partitions, bool) or not isinstance(partitions, int) \
                or not 0 < partitions <= PartitionedExchange.MAX_PARTITIONS:
            return
        self._check("read", "exchange", name, 40, 10)
        for i in range(partitions):
            self._check("configure", "queue", f"{name}-{i}", 40, 10)
            self._check("write", "queue", f"{name}-{i}", 40, 10)

    async def exchange_delete(self, m) -> None:
        self.session.vhost.check_exchange_delete(m.exchange)
        self._check("configure", "exchange", m.exchange, 40, 20)
        await self.broker.metadata.delete_exchange(vhost=self.session.vhost.name,
                                                   name=m.exchange, if_unused=m.if_unused,
                                                   actor=self.session.user.name)
        if not m.nowait:
            self.session.send_method(self.number, C.Exchange.DeleteOk())

    async def exchange_bind(self, m, unbind: bool = False) -> None:
        mid = 40 if unbind else 30
        self._check("write", "exchange", m.destination, 40, mid)
        if m.destination == "" or m.source == "":
            raise errors.AccessRefused("operation not permitted on the default exchange", 40, mid)
        self._check("read", "exchange", m.source, 40, mid)
        self._check_binding_key(m.source, m.routing_key, 40, mid)
        md = self.broker.metadata
        change = md.unbind if unbind else md.bind
        await change(vhost=self.session.vhost.name, kind="exchange", destination=m.destination,
                     source=m.source, key=m.routing_key, arguments=m.arguments,
                     owner=self.session.owner, cid=40, mid=mid, actor=self.session.user.name)
        if not m.nowait:
            self.session.send_method(self.number,
                                     C.Exchange.UnbindOk() if unbind else C.Exchange.BindOk())

    def exchange_unbind(self, m):
        return self.exchange_bind(m, unbind=True)

    async def queue_declare(self, m) -> None:
        session = self.session
        vhost = session.vhost
        name = m.queue
        if name.startswith(REPLY_TO):
            # the direct reply-to pseudo-queue "exists" with one consumer, declared passively
            # or not (RabbitMQ); a reply address exists while its consumer does
            if not self._reply_to_exists(name):
                raise errors.NotFound(f"no queue '{name}' in vhost '{vhost.name}'", 50, 10)
            self.last_queue = name
            if not m.nowait:
                session.write(fp.build_declare_ok(self.number, name, 0, 1))
            return
        if not m.passive:       # a passive declare of '' is not the last queue: 404 (RabbitMQ)
            if not name:
                name = "amq.gen-" + _random_suffix()
            elif name.startswith("amq."):
                # reserved even when the queue exists, e.g. a server-named one (RabbitMQ)
                raise errors.AccessRefused(
                    f"queue name '{name}' contains reserved prefix 'amq.*'", 50, 10)
            self._check("configure", "queue", name, 50, 10)
            if name not in vhost.queues:
                self._check_reference(m.arguments, "x-dead-letter-exchange", "queue", name,
                                      50, 10)
        name = await self.broker.metadata.declare_queue(
            vhost=vhost.name, name=name, owner=session.owner, passive=m.passive,
            durable=m.durable, exclusive=m.exclusive, auto_delete=m.auto_delete,
            arguments=m.arguments, actor=session.user.name)
        q = vhost.get_queue(name, session.owner, 50, 10)    # our copy has it by now
        if q.exclusive_owner == session.owner:
            session.exclusive_queues.add(q)
        self.last_queue = q.name
        if not m.nowait:
            messages, consumers = await q.counts()
            session.write(fp.build_declare_ok(self.number, q.name, messages, consumers))

    def _reply_to_exists(self, name: str) -> bool:
        if name == REPLY_TO:
            return True
        if not name.startswith(REPLY_TO_PREFIX):
            return False
        token = name[len(REPLY_TO_PREFIX):]
        server = self.session.server
        if token.startswith(server.token_prefix):
            return token in server.reply_to
        # another front-end's connection (its token, Session.reply_token): not known here
        # without asking that front-end, so taken to exist
        return self.broker.forward_reply is not None and REPLY_TOKEN.fullmatch(token) is not None

    async def queue_bind(self, m, unbind: bool = False) -> None:
        mid = 50 if unbind else 20
        name = self._queue_name(m.queue, 50, mid)
        self._check("write", "queue", name, 50, mid)
        if m.exchange == "":
            raise errors.AccessRefused("operation not permitted on the default exchange", 50, mid)
        self._check("read", "exchange", m.exchange, 50, mid)
        self._check_binding_key(m.exchange, m.routing_key, 50, mid)
        md = self.broker.metadata
        change = md.unbind if unbind else md.bind
        await change(vhost=self.session.vhost.name, kind="queue", destination=name,
                     source=m.exchange, key=m.routing_key, arguments=m.arguments,
                     owner=self.session.owner, cid=50, mid=mid, actor=self.session.user.name)
        if unbind:
            self.session.send_method(self.number, C.Queue.UnbindOk())
        elif not m.nowait:
            self.session.send_method(self.number, C.Queue.BindOk())

    def queue_unbind(self, m):
        return self.queue_bind(m, unbind=True)

    async def queue_purge(self, m) -> None:
        name = self._queue_name(m.queue, 50, 30)
        self._check("read", "queue", name, 50, 30)
        q = self.session.vhost.get_queue(name, self.session.owner, 50, 30)
        count = await q.purge()
        if not m.nowait:
            self.session.send_method(self.number, C.Queue.PurgeOk(message_count=count))

    async def queue_delete(self, m) -> None:
        session = self.session
        name = self._queue_name(m.queue, 50, 40)
        self._check("configure", "queue", name, 50, 40)
        q = session.vhost.queues.get(name)
        if q is not None and q.args.queue_type == "quorum" and (m.if_unused or m.if_empty):
            raise errors.NotImplemented_(quorum_delete_refusal(session.vhost.name, name,
                                                               m.if_unused), 50, 40)
        if q is not None:
            self.deleting.setdefault(q, [])
        try:
            count = await self.broker.metadata.delete_queue(
                vhost=session.vhost.name, name=name, owner=session.owner,
                if_unused=m.if_unused, if_empty=m.if_empty, actor=session.user.name)
            if q is not None:
                session.exclusive_queues.discard(q)
            if not m.nowait:
                session.send_method(self.number, C.Queue.DeleteOk(message_count=count))
        finally:
            for consumer in self.deleting.pop(q, ()):
                self._notify_cancel(consumer)

    def basic_qos(self, m) -> None:
        if m.prefetch_size:
            raise errors.NotImplemented_("prefetch_size!=0 (%d)" % m.prefetch_size, 60, 10)
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            if self.session.protocol == AMQP10 and m.prefetch_count > self.prefetch:
                self._widen(m.prefetch_count)
            self.prefetch = m.prefetch_count
        self.session.send_method(self.number, C.Basic.QosOk())
        if self.held:
            self._release_held()
        if self.global_prefetch:
            self._share_global_credit()

    def _widen(self, prefetch: int) -> None:
        """The AMQP 1.0 listener's links (``amqp10/connection.py``, whose connections the
        adapter claim names): a raised prefetch reaches the channel's consumers too, so a
        link's window follows its client's credit, as RabbitMQ's plugin consumes by
        credit. (For any other client a basic.qos applies to later consumers only, as in
        RabbitMQ.)"""
        for c in self.consumers.values():
            if c.credit_on_ack and c.queue is not None and c.partition is None \
                    and prefetch > c.prefetch:
                extra, c.prefetch = prefetch - c.prefetch, prefetch
                self._grant(c, extra)

    async def basic_consume(self, m) -> None:
        session = self.session
        tag = m.consumer_tag or "amq.ctag-" + uuid.uuid4().hex[:22]
        if tag in self.consumers or tag in self.groups:
            raise errors.NotAllowed(f"attempt to reuse consumer tag '{tag}'", 60, 20)
        args = m.arguments or {}
        if args.get(group_member.GROUP_ARG) is not None and m.queue != REPLY_TO:
            await self._group_consume(m, tag, args)
            return
        if m.queue == REPLY_TO:
            if not m.no_ack:
                raise errors.PreconditionFailed("reply consumer cannot acknowledge", 60, 20)
            if self.reply_consumer is not None:
                raise errors.PreconditionFailed("reply consumer already set", 60, 20)
            c = Consumer(tag, self, None, no_ack=True, exclusive=False, priority=0, prefetch=0,
                         arguments=args)
            self.reply_consumer = c
            self.consumers[tag] = c
            session.server.reply_to[session.reply_token] = (self, c)
            if not m.nowait:
                session.send_method(self.number, C.Basic.ConsumeOk(consumer_tag=tag))
            return
        name = self._queue_name(m.queue, 60, 20)
        self._check("read", "queue", name, 60, 20)
        q = session.vhost.get_queue(name, session.owner, 60, 20)
        if q.is_stream:
            check_stream_consume(name, session.vhost.name, args, prefetch=self.prefetch,
                                 no_ack=m.no_ack, global_qos=bool(self.global_prefetch),
                                 now_ms=now_ms())
        priority = args.get("x-priority", 0)
        # rabbit_amqqueue's consume_args validators, worded as RabbitMQ prints them
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise errors.PreconditionFailed(
                f"invalid arg 'x-priority' for {session.vhost._q(name)}: \"expected integer, "
                f"got {amqp_type(priority)}\"", 60, 20)
        failover = args.get("x-cancel-on-ha-failover", False)
        if not isinstance(failover, bool):
            raise errors.PreconditionFailed(
                f"invalid arg 'x-cancel-on-ha-failover' for {session.vhost._q(name)}: "
                f"{{unacceptable_type,{amqp_type(failover)}}}", 60, 20)
        if self.global_prefetch and q.args.queue_type == "quorum":
            raise errors.NotImplemented_(
                f"{session.vhost._q(name)} does not support global qos", 60, 20)
        c = Consumer(tag, self, q, no_ack=m.no_ack, exclusive=m.exclusive, priority=priority,
                     prefetch=self.prefetch, arguments=args)
        shared = self.global_prefetch and not c.no_ack
        c.credit_out = 0 if shared else c.initial_credit(WINDOW)
        try:
            await q.subscribe(c, c.credit_out)                 # the host checks exclusivity
        except errors.AMQPError:
            q.client.consumers.pop(c.cid, None)
            raise
        if self.closed:
            q.unsubscribe(c)
            return
        self.consumers[tag] = c
        if not m.nowait:
            session.send_method(self.number, C.Basic.ConsumeOk(consumer_tag=tag))
        self._consumer_event("consumer.created", c)
        if shared:
            self._share_global_credit()

    async def _group_consume(self, m, tag: str, args: dict) -> None:
        """basic.consume with x-consumer-group: a member (``group_member.py``)."""
        member = await group_member.consume(self, m, tag, args, WINDOW)
        if member is None:
            return                          # the channel closed meanwhile
        if tag in self.consumers or tag in self.groups:     # a concurrent consume won
            for p in member.parts:
                p.queue.unsubscribe(p)
            member.leave(permanent=True)
            raise errors.NotAllowed(f"attempt to reuse consumer tag '{tag}'", 60, 20)
        self.groups[tag] = member
        for p in member.parts:
            self.consumers[p.key] = p
        if not m.nowait:
            self.session.send_method(self.number, C.Basic.ConsumeOk(consumer_tag=tag))

    def _cancel_group(self, member) -> None:
        for p in member.parts:
            self.consumers.pop(p.key, None)
            p.queue.unsubscribe(p)

    def _group_share_cancelled(self, part: Consumer) -> None:
        """A share's partition went away (topic deleted) or its worker stopped: the member
        is cancelled as a whole (consumer_cancel_notify) and leaves the group."""
        member = part.member
        if self.groups.get(member.tag) is not member:
            return
        del self.groups[member.tag]
        self._cancel_group(member)
        member.leave(permanent=False)
        self._notify_cancel(part)

    async def basic_cancel(self, m) -> None:
        member = self.groups.pop(m.consumer_tag, None)
        if member is not None:
            # a dynamic member leaves for good; a static one keeps its partitions for the
            # session timeout, as Kafka's (KIP-345): clients cancel their consumers when they
            # close, and a rolling restart must not move partitions
            self._cancel_group(member)
            member.leave(permanent=member.instance_id is None)
            if not m.nowait:
                self.session.send_method(self.number,
                                         C.Basic.CancelOk(consumer_tag=m.consumer_tag))
            return
        c = self.consumers.pop(m.consumer_tag, None)
        if c is not None:
            self._consumer_event("consumer.deleted", c)
            if c is self.reply_consumer:
                self._remove_consumer(c)
            else:
                done = c.queue.unsubscribe(c, wait=True)
                if done is not None:
                    try:
                        await done
                    except errors.AMQPError:
                        pass                # the queue's worker restarted: nothing to cancel
        if not m.nowait:
            self.session.send_method(self.number, C.Basic.CancelOk(consumer_tag=m.consumer_tag))

    async def basic_get(self, m) -> None:
        session = self.session
        name = self._queue_name(m.queue, 60, 70)
        self._check("read", "queue", name, 60, 70)
        q = session.vhost.get_queue(name, session.owner, 60, 70)
        epoch = q.client.epoch
        got = await q.get(m.no_ack)
        if got is None:
            self.stats.on_get_empty()
            session.send_method(self.number, C.Basic.GetEmpty())
            return
        offset, record, redelivered, remaining = got
        self.stats.on_get(m.no_ack, redelivered)
        tag = self.next_tag
        self.next_tag += 1
        if not m.no_ack:
            self.unacked[tag] = (q, offset, None, epoch)
        session.write(fp.build_get_ok(self.number, tag, redelivered, record.exchange.encode(),
                                      record.routing_key.encode(), remaining, record.properties,
                                      record.body, session.conn.frame_max))
        if session.vhost.tracing:
            trace.delivered(self, q.name, record, redelivered)

    def basic_recover(self, m) -> None:
        if not m.requeue:
            raise errors.NotImplemented_("requeue=false", 60, 110)
        self.requeue_all()
        self.session.send_method(self.number, C.Basic.RecoverOk())

    def basic_recover_async(self, m) -> None:
        if not m.requeue:
            raise errors.NotImplemented_("requeue=false", 60, 100)
        self.requeue_all()

    def confirm_select(self, m) -> None:
        if self.tx is not None:
            raise errors.PreconditionFailed("cannot switch from tx to confirm mode", 85, 10)
        self.stats.on_confirm_select()      # publish_confirm: the publishes from here on
        self.confirm = True
        if not m.nowait:
            self.session.send_method(self.number, C.Confirm.SelectOk())

    def tx_select(self, m) -> None:
        if self.confirm:
            raise errors.PreconditionFailed("cannot switch from confirm to tx mode", 90, 10)
        if self.tx is None:
            self.tx = []
        self.session.send_method(self.number, C.Tx.SelectOk())

    async def tx_commit(self, m) -> None:
        if self.tx is None:
            raise errors.PreconditionFailed("channel is not transactional", 90, 20)
        actions, self.tx = self.tx, None          # apply outside tx mode, then re-enter it
        try:
            for kind, item, requeue in actions:
                if kind == "publish":
                    pending = self._publish(item)
                    if pending is not None:
                        await pending
                else:
                    self._settle(item, ack=kind == "ack", requeue=requeue)
        finally:
            self.tx = []
        self.session.send_method(self.number, C.Tx.CommitOk())

    def tx_rollback(self, m) -> None:
        if self.tx is None:
            raise errors.PreconditionFailed("channel is not transactional", 90, 30)
        # acks and nacks of the transaction are void: those deliveries are unacked again
        restored = [pair for kind, item, _ in self.tx if kind != "publish" for pair in item]
        self.tx = []
        if restored:
            self.unacked.update(restored)
            self.unacked = dict(sorted(self.unacked.items()))
        self.session.send_method(self.number, C.Tx.RollbackOk())


HANDLERS = {
    "Channel.Flow": Channel.channel_flow,
    "Channel.FlowOk": Channel.channel_flow_ok,
    "Exchange.Declare": Channel.exchange_declare,
    "Exchange.Delete": Channel.exchange_delete,
    "Exchange.Bind": Channel.exchange_bind,
    "Exchange.Unbind": Channel.exchange_unbind,
    "Queue.Declare": Channel.queue_declare,
    "Queue.Bind": Channel.queue_bind,
    "Queue.Unbind": Channel.queue_unbind,
    "Queue.Purge": Channel.queue_purge,
    "Queue.Delete": Channel.queue_delete,
    "Basic.Qos": Channel.basic_qos,
    "Basic.Consume": Channel.basic_consume,
    "Basic.Cancel": Channel.basic_cancel,
    "Basic.Get": Channel.basic_get,
    "Basic.Recover": Channel.basic_recover,
    "Basic.RecoverAsync": Channel.basic_recover_async,
    "Confirm.Select": Channel.confirm_select,
    "Tx.Select": Channel.tx_select,
    "Tx.Commit": Channel.tx_commit,
    "Tx.Rollback": Channel.tx_rollback,
}


def _stream_properties(record, offset: int, chunks: bool) -> bytes:
    """A stream delivery's properties: RabbitMQ's ``x-stream-offset`` header on every one,
    and for a stream protocol consumer (``chunks``) when it was stored, which its chunks
    carry (``x-stream-timestamp``)."""
    if chunks:
        return props_mod.with_stream_headers(record.properties, offset, record.timestamp)
    return props_mod.with_stream_offset(record.properties, offset)
