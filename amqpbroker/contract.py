"""Every message that crosses a link, declared once.

Theory of operation
-------------------
The broker's processes share no objects, only messages. A front-end talks to the partition
host that owns a queue (a worker process, or its own process with ``--workers 0``) in
*partition commands* and hears back in *partition events*; the supervisor and its children
talk over a control channel in *control messages*; the supervisor keeps front-ends' copies
of the metadata current with *metadata ops*, front-ends ask it to change metadata with
*metadata calls* and report their connections and channels in *counts* (for the node's
limits). Each message is declared below, once, with

* a wire name (``pub``, ``dlv``, ...): the handler of message ``pub`` is the receiver's
  method ``on_pub`` (``handlers`` builds the dispatch table and refuses a receiver that lacks
  one, so adding a message is one declaration plus its handlers);
* typed fields, in order: ``u8``, ``u32``, ``u64``, ``bool``, ``str``, ``bytes``, ``u64s``
  (a list of offsets), ``grants`` (a list of (consumer id, credit)), ``record`` (a message in
  the log's record layout, ``storage/record.py``), ``records`` (a list of them: a u32 count,
  then the records back to back), ``run`` (the same bytes as ``records``, decoded as a
  ``RecordRun``: the records' bytes as they came and their count, no ``Record`` each; encoded
  from a ``RecordRun`` or a list of records), and ``any`` (a Python value);
* whether it is a *request*: its first field is ``req``, a number the sender chose, and the
  receiver answers ``Reply(req, ok, value)``; ``req`` 0 asks for no answer.

A message is a ``NamedTuple`` subclass: built with keywords (``Pub(qid=..., seq=..., ...)``),
read by attribute. Nothing else builds or unpacks a message by position.

The codec (``encode`` / ``decode``) is derived from the field types. A message whose fields
are all binary types is packed by ``struct``: one type byte, its fixed-size fields in one
struct, then its variable fields in order; a record (or a list of records) travels last, in
the log's layout, so a publish, a read's publishes to one queue (``pubs``) or a delivery is a
small fixed header followed by the records' own bytes (a run of deliveries to one
consumer, ``dlvs``, likewise), packed in
one pass by C (``storage/_record.c``) with the header (and a link's own prefix) in front:
into one bytes object (``encode``), or, on the ring link, straight into the ring's reserved
space (``size_many`` / ``write_many``), so the body is copied once on its way into a ring.
A message with an ``any`` field (cold paths: declares, replies, metadata) is the type byte
followed by a pickle of its field values. Pickle is safe here: both ends are processes of
one broker, and client bytes only ever travel inside ``bytes`` fields, never as pickles.

Links (``amqpbroker/links``): ``LocalLink`` hands message objects across a function call
(``--workers 0``; ``LocalLink(codec=True)`` round-trips them through the codec, as tests
do), the ring link and the TCP link carry ``encode``'s bytes.
"""
from __future__ import annotations

import pickle
import struct
from typing import NamedTuple

from .storage.record import (Record, RecordRun, decode_record, encode_record, pack_message, pack_messages,
                             pack_messages_at, size_messages, unpack_message, unpack_messages)

FIXED = {"u8": "B", "u32": "I", "u64": "Q", "bool": "?"}
VARIABLE = {"str", "bytes", "u64s", "grants", "record", "records", "run", "any"}
_U32 = struct.Struct(">I")
_U64S = {}                  # count -> Struct of that many u64s (built on first use)
_GRANT = struct.Struct(">II")

MESSAGES: dict[int, type] = {}          # type byte -> message class
BY_NAME: dict[str, type] = {}           # wire name -> message class
# the hot shape (fixed fields, then a record: pub, dlv, ...), for the batch codec below
HOT_ENCODE: dict[type, tuple[int, str]] = {}    # message class -> (type byte, struct format)
HOT_DECODE: dict[int, tuple[str, type]] = {}    # type byte -> (struct format, message class)


def message(type_id: int, name: str, *fields: tuple[str, str], request: bool = False):
    """Declare one message: a NamedTuple class with the contract's metadata attached."""
    if request:
        fields = (("req", "u32"), *fields)
    for fname, ftype in fields:
        if ftype not in FIXED and ftype not in VARIABLE:
            raise TypeError(f"{name}.{fname}: unknown field type {ftype}")
    cls_name = "".join(part.capitalize() for part in name.split("_"))
    cls = NamedTuple(cls_name, [(f, object) for f, _ in fields])
    # the module-level name must be the class name: pickle finds a class by it
    cls.__module__ = __name__
    cls.TYPE_ID = type_id
    cls.NAME = name
    cls.FIELDS = fields
    cls.REQUEST = request
    cls.HANDLER = "on_" + name
    if type_id in MESSAGES or name in BY_NAME:
        raise ValueError(f"message {name} ({type_id}) declared twice")
    MESSAGES[type_id] = cls
    BY_NAME[name] = cls
    _build_codec(cls)
    return cls


# =================================================================== codec
def encode(msg, prefix: bytes = b"") -> list:
    """``prefix`` and the message as a list of byte strings to be sent back to back (one
    string for the hot messages)."""
    return msg.ENCODE(msg, prefix)


def encode_bytes(msg, prefix: bytes = b"") -> bytes:
    pieces = msg.ENCODE(msg, prefix)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def decode(data, pos: int = 0):
    """The message at ``pos`` of ``data`` (bytes or memoryview), as ``encode`` produced it."""
    try:
        cls = MESSAGES[data[pos]]
    except KeyError:
        raise ValueError(f"unknown message type {data[pos]}") from None
    return cls.DECODE(data, pos)


def encode_many(msgs: list, prefix: bytes, limit: int) -> tuple[bytes, bytes, int]:
    """``msgs[:count]`` encoded back to back, each behind ``prefix``, in one C call:
    ``(data, lens, count)``, ``lens`` their lengths as native uint32 (a ring's
    ``push_packed`` takes both as they are). Stops before the first message longer than
    ``limit`` bytes, so ``count < len(msgs)`` leaves that one to the caller. The same bytes
    as ``encode_bytes(m, prefix)`` for each message (``storage/record.py``,
    ``pack_messages_py``, is the reference)."""
    return pack_messages(msgs, HOT_ENCODE, lambda m: encode_bytes(m, prefix), prefix, limit)


def size_many(msgs: list, prefix: bytes, limit: int):
    """``encode_many`` in two steps, to encode straight into a ring (``Ring.push_with``):
    ``(sized, lens, count)``, the lengths ``encode_many`` would give, then
    ``write_many(sized, buf, offs, n)`` writes the first ``n`` messages each at its offset
    of ``buf`` (``offs``: native uint64), the same bytes as ``encode_many``'s. A body is
    copied once, from its bytes into the ring."""
    return size_messages(msgs, HOT_ENCODE, lambda m: encode_bytes(m, prefix), prefix, limit)


write_many = pack_messages_at


def decode_many(buf, offs, n: int, other, lend: bool = False) -> list:
    """The messages of ``n`` records of ``buf`` (``offs``: native uint64 ``[start, end)``
    pairs, as a ring's ``peek`` gives them), decoded where they lie in one C call. A record
    that is not a whole hot message (its first byte ``0``, then its type) is passed to
    ``other(bytes)``, whose result is kept unless it is None (the caller's own prefixes:
    fragments of a big message). ``lend``: a ``Dlvs``'s run is not copied out of ``buf``
    (``LENT_RUNS``): its ``data`` is a read-only memoryview of ``buf``, which the caller
    releases (or copies, ``RecordRun.keep``) before the memory is reused."""
    return unpack_messages(buf, offs, n, HOT_DECODE_LENT if lend else HOT_DECODE, Record,
                           other)


def _build_codec(cls) -> None:
    types = [t for _, t in cls.FIELDS]
    tid = bytes([cls.TYPE_ID])
    if "any" in types:
        make = cls._make

        def enc_pickled(msg, prefix):
            return [prefix + tid, pickle.dumps(tuple(msg), 5)]

        def dec_pickled(data, pos):
            return make(pickle.loads(memoryview(data)[pos + 1:]))
        cls.ENCODE, cls.DECODE = staticmethod(enc_pickled), staticmethod(dec_pickled)
        return
    fixed = [i for i, t in enumerate(types) if t in FIXED]
    variable = [i for i, t in enumerate(types) if t not in FIXED]
    for kind in ("record", "records", "run"):
        if kind in types and types[-1] != kind:
            raise TypeError(f"{cls.NAME}: a {kind} field travels last")
    head = struct.Struct(">B" + "".join(FIXED[types[i]] for i in fixed))
    pack, unpack_from, size = head.pack, head.unpack_from, head.size
    type_id = cls.TYPE_ID
    make = cls._make
    n = len(types)
    if not variable:
        def enc_fixed(msg, prefix):
            return [prefix + pack(type_id, *msg)]

        def dec_fixed(data, pos):
            return make(unpack_from(data, pos)[1:])
        cls.ENCODE, cls.DECODE = staticmethod(enc_fixed), staticmethod(dec_fixed)
        return
    if variable == [n - 1] and types[-1] in ("record", "records", "run"):  # hot: pub, pubs, dlv
        fmt = "".join(FIXED[t] for t in types[:-1])      # one C call each way
        if types[-1] == "records":
            fmt += "*"                                   # a list of records (record.py)
        elif types[-1] == "run":
            fmt += "#"                                   # the same, decoded as a RecordRun
        last_cls = RecordRun if types[-1] == "run" else Record

        def enc_record(msg, prefix):
            return [pack_message(prefix, type_id, fmt, msg)]

        def dec_record(data, pos):
            return unpack_message(data, pos, fmt, cls, last_cls)
        cls.ENCODE, cls.DECODE = staticmethod(enc_record), staticmethod(dec_record)
        HOT_ENCODE[cls] = (type_id, fmt)
        HOT_DECODE[type_id] = (fmt, cls, RecordRun) if types[-1] == "run" else (fmt, cls)
        return
    var_codecs = [(i, _ENCODERS[types[i]], _DECODERS[types[i]]) for i in variable]

    def enc_general(msg, prefix):
        out = [prefix + pack(type_id, *[msg[i] for i in fixed])]
        for i, enc, _ in var_codecs:
            out.extend(enc(msg[i]))
        return out

    def dec_general(data, pos):
        values = [None] * n
        for i, v in zip(fixed, unpack_from(data, pos)[1:]):
            values[i] = v
        pos += size
        for i, _, dec in var_codecs:
            values[i], pos = dec(data, pos)
        return make(values)
    cls.ENCODE, cls.DECODE = staticmethod(enc_general), staticmethod(dec_general)


def _u64s_struct(n: int) -> struct.Struct:
    s = _U64S.get(n)
    if s is None:
        s = struct.Struct(f">{n}Q")
        if n <= 1024:
            _U64S[n] = s
    return s


def _enc_str(v: str) -> list:
    b = v.encode()
    return [_U32.pack(len(b)), b]


def _dec_str(data, pos: int):
    n = _U32.unpack_from(data, pos)[0]
    pos += 4
    return bytes(data[pos:pos + n]).decode(), pos + n


def _enc_bytes(v) -> list:
    return [_U32.pack(len(v)), v]


def _dec_bytes(data, pos: int):
    n = _U32.unpack_from(data, pos)[0]
    pos += 4
    return bytes(data[pos:pos + n]), pos + n


def _enc_u64s(v) -> list:
    n = len(v)
    return [_U32.pack(n) + _u64s_struct(n).pack(*v)]


def _dec_u64s(data, pos: int):
    n = _U32.unpack_from(data, pos)[0]
    pos += 4
    return list(_u64s_struct(n).unpack_from(data, pos)), pos + 8 * n


def _enc_grants(v) -> list:
    return [_U32.pack(len(v)), *(_GRANT.pack(cid, n) for cid, n in v)]


def _dec_grants(data, pos: int):
    n = _U32.unpack_from(data, pos)[0]
    pos += 4
    out = [_GRANT.unpack_from(data, pos + 8 * i) for i in range(n)]
    return out, pos + 8 * n


def _dec_record(data, pos: int):
    return decode_record(data, pos)


_ENCODERS = {"str": _enc_str, "bytes": _enc_bytes, "u64s": _enc_u64s, "grants": _enc_grants,
             "record": lambda r: [encode_record(r)]}
_DECODERS = {"str": _dec_str, "bytes": _dec_bytes, "u64s": _dec_u64s, "grants": _dec_grants,
             "record": _dec_record}

# =================================================================== dispatch
def handlers(receiver, family) -> dict:
    """{message class: bound handler} for every message of ``family`` (``on_<name>``);
    a receiver missing one is a programming error, found at start, not at the first use."""
    table = {}
    for cls in family:
        fn = getattr(receiver, cls.HANDLER, None)
        if fn is None:
            raise TypeError(f"{type(receiver).__name__} has no handler {cls.HANDLER} "
                            f"for message {cls.NAME}")
        table[cls] = fn
    return table


def fields_of(msg) -> dict:
    """A request's fields without ``req``, as keywords (for calls like LocalMetadata's)."""
    out = msg._asdict()
    out.pop("req", None)
    return out


# =================================================================== partition commands
# front-end -> partition host (worker)
Open = message(1, "open", ("qid", "u32"), ("vhost", "str"), ("name", "str"),
               ("durable", "bool"), ("auto_delete", "bool"), ("arguments", "any"),
               ("directory", "str"), request=True)
Pub = message(2, "pub", ("qid", "u32"), ("seq", "u64"), ("priority", "u8"), ("track", "bool"),
              ("flags", "u8"), ("record", "record"))
# Pub.flags: what the front-end saw of a publish that the worker needs without decoding the
# properties again (worker/dedup.py)
PUB_PRODUCER = 1        # headers carry x-producer-id: check x-sequence against the producer
PUB_SUBSEQUENCE = 2     # routed by an x-partitioned exchange: this partition sees only some of
                        # the producer's sequence numbers, so a gap is not an error
PUB_LATEST = 4          # a stream-protocol publisher's (stream_protocol/): RabbitMQ's rule,
                        # a number above the highest is stored, any other is a duplicate
# the publishes of one read of a session to one queue, numbered ``seq``, ``seq + 1``, ... in
# ``records``' order, all with the same priority, track and flags: what ``Pub`` would say of
# each, in one message, so that the host appends them as one (``PartitionHost.on_pubs``). The
# in-process link and the ring link carry it (they have ``hold``: ``PartitionClient.hold``);
# on a ring it is one record of the link: the header once, then the records in the log's layout.
# Sent as a list of records; decoded as a ``RecordRun`` (``run``): a plain queue keeps the
# bytes and appends them to its log as they are (``Queue.publish_many``, worker/store.py's
# ``StoredRun``), no ``Record`` per publish (an in-process link hands the list over).
Pubs = message(33, "pubs", ("qid", "u32"), ("seq", "u64"), ("priority", "u8"), ("track", "bool"),
               ("flags", "u8"), ("records", "run"))
# Sub.arguments: the consumer's x-arguments (x-priority, x-stream-offset, x-stream-filter, ...)
Sub = message(3, "sub", ("qid", "u32"), ("cid", "u32"), ("tag", "str"), ("no_ack", "bool"),
              ("exclusive", "bool"), ("arguments", "any"), ("credit", "u32"), request=True)
Unsub = message(4, "unsub", ("cid", "u32"), request=True)
Credit = message(5, "credit", ("grants", "grants"))
Ack = message(6, "ack", ("qid", "u32"), ("seq", "u64"), ("offsets", "u64s"))
Reject = message(7, "reject", ("qid", "u32"), ("seq", "u64"), ("requeue", "bool"),
                 ("offsets", "u64s"))
# an AMQP 1.0 consumer's ``modified`` outcome with message annotations (amqp10/): one
# delivery rejected, its message requeued or dead-lettered with ``properties`` (its AMQP 0-9-1
# properties with the annotations merged in) -- a quorum queue keeps them, as RabbitMQ's
Modify = message(102, "modify", ("qid", "u32"), ("seq", "u64"), ("requeue", "bool"),
                 ("offset", "u64"), ("properties", "bytes"))
Get = message(8, "get", ("qid", "u32"), ("no_ack", "bool"), request=True)
Purge = message(9, "purge", ("qid", "u32"), request=True)
Stats = message(10, "stats", ("qids", "any"), request=True)
Delete = message(11, "delete", ("qid", "u32"), ("if_unused", "bool"), ("if_empty", "bool"),
                 request=True)
Touch = message(12, "touch", ("qid", "u32"))
Close = message(13, "close")
# statistics (amqpbroker/stats): every queue's gauges and counters, the commit timings and
# ring occupancy of the host, answered as ``stats.host_snapshot``'s dict
HostCounters = message(19, "host_counters", request=True)

# consumer groups (groups/__init__.py). A group member's share of a partition is a Sub whose
# arguments hold ``x-consumer-group`` and ``x-group-member`` (the member id the supervisor
# assigns by); it delivers nothing until the supervisor's ``group_assign`` for it arrives.
# Its acks name the consumer, so the host knows which group's commit they drive: ``kind``
# 0 ack, 1 reject with requeue, 2 reject without (numbered like an ack: ``seq``).
GroupSettle = message(14, "group_settle", ("cid", "u32"), ("seq", "u64"), ("kind", "u8"),
                      ("offsets", "u64s"))
# supervisor -> the worker owning partition ``qid``: start / stop delivering it to ``member``.
# ``epoch``: the coordinator's term (in a cluster the leader epoch of the topic's partition 0
# when it took the group; 0 on one node) << 32, plus the partition's assignment count, so a
# worker ignores what a former coordinator still sends (supervisor/groups.py)
GroupAssign = message(15, "group_assign", ("qid", "u32"), ("group", "str"), ("member", "str"),
                      ("epoch", "u64"))
GroupRevoke = message(16, "group_revoke", ("qid", "u32"), ("group", "str"), ("member", "str"),
                      ("epoch", "u64"))
# {qid: {group: (committed offset, log start, log end)}} of the groups with a commit or an
# assignment on those partitions
GroupOffsets = message(17, "group_offsets", ("qids", "any"), request=True)
# {qid: {"owner": (member, epoch) or None, "members": [member]}} of a group on those
# partitions: the member reading each now and the members with a live share there, what a
# new coordinator asks the partitions' leaders before it assigns (supervisor/groups.py)
GroupOwners = message(35, "group_owners", ("qids", "any"), ("group", "str"), request=True)
# set a group's committed offset on ``qid`` (no member); ``to``: "earliest", "latest",
# {"offset": n} or {"timestamp": ms}; answers the new committed offset
GroupReset = message(18, "group_reset", ("qid", "u32"), ("group", "str"), ("to", "any"),
                     request=True)

# {qid: partition detail} for the management API's /api/partitions (``host.on_partitions``)
Partitions = message(31, "partitions", ("qids", "any"), request=True)
# a channel's confirm waits for the host's watermark to pass ``seq`` (an ack it made before):
# a host reports its watermark unasked only past a publish of a channel in confirm mode
# (``track``), and its ``seen`` at least every CONFIRM_SEEN_EVERY commands of the link
ConfirmWanted = message(32, "confirm_wanted", ("seq", "u64"))
CONFIRM_SEEN_EVERY = 64

# a policy was set, changed or deleted (policies.py): the queue's arguments are now these
# (its declared ones with its policy's resolved in); what they change applies at once
SetArguments = message(36, "set_arguments", ("qid", "u32"), ("arguments", "any"))
# supervisor -> the host of quorum queue ``qid``: its dead letters at ``offsets`` (``Dlx``
# with ``settle``) are confirmed by every queue they were routed to: they may go
DlxSettle = message(37, "dlx_settle", ("qid", "u32"), ("offsets", "u64s"))

# RabbitMQ's stream protocol (stream_protocol/). StoreOffset / QueryOffset: the offset a
# ``reference`` tracks on stream ``qid``, kept in the stream's group-offsets log as the commit
# of a group named ``reference`` (Kafka's next offset to read: the stored offset + 1);
# ``tracked_offset`` answers the stored offset or None. QueryPublisherSequence: the highest
# x-sequence stored for x-producer-id ``producer`` (0 if none)
TrackOffset = message(75, "track_offset", ("qid", "u32"), ("reference", "str"),
                      ("offset", "u64"), request=True)
TrackedOffset = message(76, "tracked_offset", ("qid", "u32"), ("reference", "str"),
                        request=True)
ProducerSequence = message(77, "producer_sequence", ("qid", "u32"), ("producer", "str"),
                           request=True)

PARTITION_COMMANDS = (Open, Pub, Pubs, Sub, Unsub, Credit, Ack, Reject, Modify, Get, Purge, Stats,
                      Delete, Touch, Close, HostCounters, GroupSettle, GroupAssign, GroupRevoke,
                      GroupOffsets, GroupOwners, GroupReset, Partitions, ConfirmWanted,
                      SetArguments, DlxSettle, TrackOffset, TrackedOffset, ProducerSequence)

# =================================================================== partition events
# partition host -> front-end
Dlv = message(20, "dlv", ("cid", "u32"), ("qid", "u32"), ("offset", "u64"),
              ("redelivered", "bool"), ("record", "record"))
# the deliveries of one dispatch run to one consumer (``Subscription.deliver_many``): the
# records at offsets ``offset``, ``offset + 1``, ... of queue ``qid``, none redelivered, in
# one message (on a ring, one record: the header once, then the records in the log's layout),
# which the front-end hands to the consumer's channel as one run (``Channel.deliver_run``).
# A run with a gap in its offsets, or with more than DLVS_BYTES of bodies, goes as several.
# Sent as a list of records; decoded as a ``RecordRun`` (``run``): the channel turns its bytes
# into frames in C, no ``Record`` per delivery (an in-process link hands the list over).
Dlvs = message(34, "dlvs", ("cid", "u32"), ("qid", "u32"), ("offset", "u64"),
               ("records", "run"))
DLVS_BYTES = 256 << 10
Confirm = message(21, "confirm", ("upto", "u64"), ("seen", "u64"), ("nacked", "u64s"))
Reply = message(22, "reply", ("req", "u32"), ("ok", "bool"), ("value", "any"))
Flow = message(23, "flow", ("qid", "u32"), ("on", "bool"))
Cancel = message(24, "cancel", ("cid", "u32"))
Gone = message(25, "gone", ("qid", "u32"), ("reason", "str"))
# a dead letter for the supervisor to route (worker/deadletter.py). ``settle``: at-least-once
# (worker/discards.py): the queue keeps the message at ``offset`` until a ``DlxSettle`` says
# every queue it was routed to confirmed it; otherwise ``offset`` is 0 and nothing answers
Dlx = message(26, "dlx", ("qid", "u32"), ("vhost", "str"), ("exchange", "str"),
              ("keys", "any"), ("reason", "str"), ("record", "record"), ("settle", "bool"),
              ("offset", "u64"))
Alarm = message(27, "alarm", ("name", "str"), ("detail", "any"))
# worker -> supervisor, on the supervisor's own link
WorkerReady = message(28, "worker_ready")
WorkerClosed = message(29, "worker_closed")
# worker -> supervisor: the revocation of partition ``qid`` from ``member`` at ``epoch`` is
# complete (its in-flight deliveries there are settled, or it is gone)
GroupRevoked = message(30, "group_revoked", ("qid", "u32"), ("group", "str"), ("member", "str"),
                       ("epoch", "u64"))

PARTITION_EVENTS = (Dlv, Dlvs, Confirm, Reply, Flow, Cancel, Gone, Dlx, Alarm, GroupRevoked)

# =================================================================== cluster link
# the first message on a link from another node's forwarder (``cluster/forward.py``): which
# node calls, and which worker of the called node hosts the queues it will open (the one
# ``broker.worker_of`` names from the called node's ``workers`` count; 0 for a node without
# worker processes); the rest of the link is partition commands and events
NodeHello = message(90, "node_hello", ("node", "str"), ("worker", "u32"))
# replication (``cluster/replication.py``, docs/CLUSTER.md section 4), follower -> leader on
# a cluster link after an ``Open`` of the queue: the follower's log end offset (what it has
# durable), the leader epoch it follows (``last_epoch``: a leader of another epoch refuses),
# the epoch of its last batch (``fetched_epoch``, KIP-595's lastFetchedEpoch: the leader
# checks that its own log holds that epoch up to ``offset``), a cap on the reply's record
# bytes. A long poll: the leader answers when it has records past ``offset`` (or new acks),
# or after ~500 ms.
Fetch = message(91, "fetch", ("qid", "u32"), ("offset", "u64"), ("last_epoch", "u32"),
                ("fetched_epoch", "u32"), ("max_bytes", "u32"), request=True)
# leader -> follower: ``batches`` [(base offset, leader epoch, count, records' bytes, CRC)]
# exactly as the leader's log holds them, not decoded (the follower appends each as one
# batch of that epoch, ``PartitionLog.append_raw``, and checks that it has the leader's
# CRC, None from an old segment: its log is byte-identical), the high watermark, the
# leader's epoch, log start and end; ``acks`` the leader's settled offsets as (floor,
# [(first, end)]) runs; ``error`` "" or why the fetch was refused (not leader, stale
# epoch, behind the log start, diverged: then
# ``diverging_epoch`` is the leader's largest epoch <= ``fetched_epoch`` and
# ``diverging_end`` where it ends in the leader's log, OffsetsForLeaderEpoch's answer, and
# the follower truncates by it); ``offsets`` a stream's consumer-group commits {group:
# offset} as the leader's offset file holds them (None for a queue): they replicate with the
# partition, as acks do
FetchReply = message(92, "fetch_reply", ("req", "u32"), ("hw", "u64"), ("leader_epoch", "u32"),
                     ("log_start", "u64"), ("log_end", "u64"), ("error", "str"),
                     ("batches", "any"), ("acks", "any"), ("offsets", "any"),
                     ("diverging_epoch", "u32"), ("diverging_end", "u64"),
                     ("counts", "any"), ("producers", "any"), ("modified", "any"))

# consumer groups across nodes (supervisor/groups.py, docs/CLUSTER.md "One coordinator per
# consumer group"): a group's coordinator is the node leading its topic's partition 0; a
# member's node sends it the metadata calls ``JoinGroup`` and ``LeaveGroup`` on its link to
# that partition (the one that carries its commands), which the coordinator's forwarder
# hands to its supervisor (not the queue's host); a node that does not coordinate the group
# (the two views of the leader differ for a moment) refuses a join with 404 ``NOT_COORDINATOR``
# and the member's node tries again. ``GroupDescribe``: the coordinator's live part of the
# group (members, assignment, state) for another node's /api/consumer-groups, None if it
# does not coordinate it.
GroupDescribe = message(100, "group_describe", ("vhost", "str"), ("topic", "str"),
                        ("group", "str"), request=True)
# a metadata change seen everywhere (cluster/metadata.py ``visible_everywhere``): the node
# that made one asks every other node, on its cluster link, to answer once it has applied
# etcd up to ``revision`` and its front-end processes have the ops, so a client told
# declare-ok or bind-ok on one node finds the queue or binding on every node, as RabbitMQ's
# (answered by the called node's supervisor, as the group calls are)
MetaReach = message(101, "meta_reach", ("revision", "u64"), request=True)

# a node with worker processes (docs/CLUSTER.md "As built (layouts)"): replication runs in
# the worker that hosts the node's copy of a queue, fed the etcd view by the supervisor.
# supervisor -> that worker, on the supervisor's ring link (in order with the supervisor's
# own commands: a promoted follower reopens its queue before the Sub that follows the
# promotion is handled): the role of its queue ``qid`` from the
# partition's ``partitions/`` key ``key``, ``state`` its value (leader, leader_epoch,
# replicas, isr, min_isr); ``node`` this node's name; ``leader_at`` [host, cluster port,
# worker] of the leader node (the follower dials it), or None. ``state`` None: no role.
ReplicaRole = message(93, "replica_role", ("qid", "u32"), ("node", "str"), ("key", "str"),
                      ("state", "any"), ("leader_at", "any"))
# supervisor -> every worker (its ring link): this node holds its etcd lease until loop time ``until``
# (CLOCK_MONOTONIC, the same clock in every process of the machine); 0 while fenced
LeaseUntil = message(94, "lease_until", ("until", "any"))
# supervisor -> worker: its replica of queue ``qid`` for /api/partitions (``replica`` in
# cluster/replication.py), None when it has no role
ReplicaDescribe = message(97, "replica_describe", ("qid", "u32"), ("checksum", "bool"),
                          request=True)
# worker -> supervisor (control channel): a leader's ISR change, written to etcd by the
# supervisor in one txn that holds only while the key still names ``leader`` at ``epoch``;
# ``seq`` numbers the leader's ISR writes (``Leader.maximal_isr`` in cluster/replication.py)
IsrChange = message(95, "isr_change", ("key", "str"), ("leader", "str"), ("epoch", "u32"),
                    ("isr", "any"), ("seq", "u32"))
# supervisor -> front-end: where the queues led by other nodes are served: ``nodes``
# {node: [host, cluster port, workers]}, ``leaders`` [[vhost, queue, node]]; a queue not
# listed is served by this node's own copy (``cluster/forward.py``); the whole table at the
# supervisor's ``version`` of it (``cluster/routes.py``)
Leaders = message(96, "leaders", ("node", "str"), ("version", "u64"), ("nodes", "any"),
                  ("leaders", "any"))
# supervisor -> front-end: the table's change from ``version - 1`` to ``version``: the
# entries ``set`` [[vhost, queue, node]] and ``removed`` [[vhost, queue]], ``nodes`` whole
LeadersChanged = message(98, "leaders_changed", ("version", "u64"), ("nodes", "any"),
                         ("set", "any"), ("removed", "any"))
# front-end -> supervisor: a ``LeadersChanged`` did not follow the front-end's ``version``
# of the table: send the whole ``Leaders``
LeadersWanted = message(99, "leaders_wanted", ("version", "any"))

# =================================================================== control channel
# supervisor -> front-end
Snapshot = message(40, "snapshot", ("ops", "any"))
ApplyOp = message(41, "apply_op", ("op", "any"))
LinkWorker = message(42, "link_worker", ("worker", "u32"))
HostLost = message(43, "host_lost", ("worker", "u32"))
Serve = message(44, "serve")
Shutdown = message(45, "shutdown")
Connections = message(46, "connections", request=True)
CloseConnection = message(47, "close_connection", ("name", "str"), ("reason", "str"),
                          request=True)
Sync = message(48, "sync", request=True)
# both ways: a direct reply-to message for a connection of another front-end
ReplyTo = message(49, "reply_to", ("token", "str"), ("record", "record"))
# front-end -> supervisor
FrontendReady = message(50, "frontend_ready", ("index", "u32"))
# supervisor -> worker
LinkFrontend = message(51, "link_frontend", ("name", "str"))
UnlinkFrontend = message(52, "unlink_frontend", ("name", "str"))
# supervisor -> front-end: metadata ops that make one change (a topic's exchange, partitions
# and bindings), applied together so no publish is routed in between
ApplyOps = message(57, "apply_ops", ("ops", "any"))
# supervisor -> front-end: statistics (amqpbroker/stats), answered as
# ``FrontendStats.snapshot``'s dict
FrontendCounters = message(39, "frontend_counters", request=True)

TO_FRONTEND = (Snapshot, ApplyOp, ApplyOps, LinkWorker, HostLost, Serve, Shutdown, Connections,
               CloseConnection, Sync, ReplyTo, Alarm, FrontendCounters, Leaders,
               LeadersChanged)
TO_WORKER = (LinkFrontend, UnlinkFrontend, ReplicaDescribe, Alarm)
FROM_WORKER = (IsrChange,)

# =================================================================== counts
# front-end -> supervisor: every AMQP connection and channel that opens and closes, so the
# supervisor knows the node's counts for RabbitMQ's limits (max-connections per vhost and
# per user, max-channels per user: ``supervisor/tally.py``). ``conn`` names the connection
# across the node (its reply-to token). The opens are requests the supervisor checks against
# the limits, 530 NOT_ALLOWED over one, when the front-end's copy shows a limit that applies;
# otherwise they are sent with ``req`` 0, counted without an answer (``frontend/admission.py``).
OpenConnection = message(53, "open_connection", ("conn", "str"), ("vhost", "str"),
                         ("user", "str"), request=True)
OpenChannel = message(54, "open_channel", ("conn", "str"), request=True)
ChannelClosed = message(55, "channel_closed", ("conn", "str"))
ConnectionClosed = message(56, "connection_closed", ("conn", "str"))

COUNTS = (OpenConnection, OpenChannel, ChannelClosed, ConnectionClosed)

# =================================================================== metadata calls
# front-end -> supervisor: a channel changes metadata (``supervisor/metadata.LocalMetadata``
# has a method of each name; ``frontend/metadata_copy.RemoteMetadata`` sends these)
DeclareExchange = message(60, "declare_exchange", ("vhost", "str"), ("name", "str"),
                          ("type", "str"), ("passive", "bool"), ("durable", "bool"),
                          ("auto_delete", "bool"), ("internal", "bool"), ("arguments", "any"),
                          ("actor", "str"), request=True)
DeleteExchange = message(61, "delete_exchange", ("vhost", "str"), ("name", "str"),
                         ("if_unused", "bool"), ("actor", "str"), request=True)
Bind = message(62, "bind", ("vhost", "str"), ("kind", "str"), ("destination", "str"),
               ("source", "str"), ("key", "str"), ("arguments", "any"), ("owner", "any"),
               ("cid", "u32"), ("mid", "u32"), ("actor", "str"), request=True)
Unbind = message(63, "unbind", ("vhost", "str"), ("kind", "str"), ("destination", "str"),
                 ("source", "str"), ("key", "str"), ("arguments", "any"), ("owner", "any"),
                 ("cid", "u32"), ("mid", "u32"), ("actor", "str"), request=True)
DeclareQueue = message(64, "declare_queue", ("vhost", "str"), ("name", "str"), ("owner", "any"),
                       ("passive", "bool"), ("durable", "bool"), ("exclusive", "bool"),
                       ("auto_delete", "bool"), ("arguments", "any"), ("actor", "str"),
                       request=True)
DeleteQueue = message(65, "delete_queue", ("vhost", "str"), ("name", "str"), ("owner", "any"),
                      ("if_unused", "bool"), ("if_empty", "bool"), ("actor", "str"),
                      request=True)
# a publish through an x-message-deduplication exchange: has the exchange seen ``key`` (within
# its cache's ttl)? The owner keeps the one cache of the node, so a duplicate is caught
# whichever front-end it came through; answers True for a duplicate (routed nowhere)
DedupSeen = message(67, "dedup_seen", ("vhost", "str"), ("exchange", "str"), ("key", "any"),
                    ("ttl", "any"), request=True)
# a publish through an x-delayed-message exchange with a positive x-delay: the owner holds it
# (supervisor/delayed.py) and answers once it is on disk (then the publisher is confirmed)
DelayMessage = message(71, "delay_message", ("vhost", "str"), ("exchange", "str"),
                       ("keys", "any"), ("record", "record"), ("priority", "u8"),
                       ("delay", "u64"), request=True)
DeleteQueueNow = message(66, "delete_queue_now", ("vhost", "str"), ("name", "str"),
                         ("qid", "u32"), ("reason", "str"))

# consumer groups (supervisor/groups.py): a member joins on basic.consume with
# x-consumer-group (``topic``: the topic or stream consumed; ``instance_id``: its
# x-group-instance-id or None; ``connection``: its connection's name, for the API) and leaves on basic.cancel (``permanent``) or channel / connection loss
JoinGroup = message(58, "join_group", ("vhost", "str"), ("topic", "str"), ("group", "str"),
                    ("member", "str"), ("instance_id", "any"), ("connection", "str"),
                    request=True)
LeaveGroup = message(59, "leave_group", ("vhost", "str"), ("topic", "str"), ("group", "str"),
                     ("member", "str"), ("permanent", "bool"))

# a message routed through an x-recent-history exchange, for its history (a notice:
# supervisor/recent_history.py)
KeepRecent = message(38, "keep_recent", ("vhost", "str"), ("exchange", "str"),
                     ("record", "record"))

METADATA_CALLS = (DeclareExchange, DeleteExchange, Bind, Unbind, DeclareQueue, DeleteQueue,
                  DeleteQueueNow, JoinGroup, LeaveGroup, DedupSeen, DelayMessage, KeepRecent)
TO_SUPERVISOR = (*METADATA_CALLS, *COUNTS, FrontendReady, ReplyTo, LeadersWanted)

# =================================================================== metadata ops
# supervisor -> front-ends' copies (``frontend/metadata_copy.apply_op``)
UsersOp = message(80, "users_op", ("users", "any"), ("permissions", "any"),
                  ("topic_permissions", "any"))
VhostOp = message(81, "vhost_op", ("name", "str"), ("description", "str"), ("tags", "any"),
                  ("default_queue_type", "any"))
VhostDeleted = message(82, "vhost_deleted", ("name", "str"))
ExchangeOp = message(83, "exchange_op", ("vhost", "str"), ("name", "str"), ("type", "str"),
                     ("durable", "bool"), ("auto_delete", "bool"), ("internal", "bool"),
                     ("arguments", "any"), ("policy_alternate", "any"))
ExchangeDeleted = message(84, "exchange_deleted", ("vhost", "str"), ("name", "str"))
QueueOp = message(85, "queue_op", ("vhost", "str"), ("name", "str"), ("qid", "u32"),
                  ("worker", "u32"), ("durable", "bool"), ("owner", "any"),
                  ("auto_delete", "bool"), ("arguments", "any"), ("directory", "str"))
QueueDeleted = message(86, "queue_deleted", ("vhost", "str"), ("name", "str"), ("qid", "u32"))
BindOp = message(87, "bind_op", ("vhost", "str"), ("source", "str"), ("dest_kind", "str"),
                 ("destination", "str"), ("key", "str"), ("arguments", "any"))
UnbindOp = message(88, "unbind_op", ("vhost", "str"), ("source", "str"), ("dest_kind", "str"),
                   ("destination", "str"), ("key", "str"), ("arguments", "any"))
# a vhost's limits (``{"max-connections": 10}``) replaced whole
VhostLimitsOp = message(89, "vhost_limits_op", ("name", "str"), ("limits", "any"))

# a vhost's policy set or changed (``item``: policies.Policy.item()), or deleted, a policy or
# (``operator``) an operator policy: for the definitions, a cluster's etcd and the front-ends'
# copies (the supervisor gives each queue's host its arguments; a front-end's channels read
# a queue's consumer timeout from its copy)
PolicyOp = message(68, "policy_op", ("vhost", "str"), ("name", "str"), ("item", "any"),
                   ("operator", "bool"))
PolicyDeleted = message(69, "policy_deleted", ("vhost", "str"), ("name", "str"),
                        ("operator", "bool"))

# the global runtime parameters (``cluster_name``, ...: ``{name: value}``), replaced whole
GlobalParametersOp = message(70, "global_parameters_op", ("parameters", "any"))
# a vhost's firehose tracing turned on or off (frontend/trace.py; not stored: off at start)
VhostTracingOp = message(72, "vhost_tracing_op", ("name", "str"), ("on", "bool"))
# a runtime parameter (a shovel's, amqpbroker/shovel) set or cleared: for the definitions and
# a cluster's etcd; front-ends have no use for them (the supervisor runs the shovels)
ParameterOp = message(73, "parameter_op", ("vhost", "str"), ("component", "str"),
                      ("name", "str"), ("value", "any"))
ParameterDeleted = message(74, "parameter_deleted", ("vhost", "str"), ("component", "str"),
                           ("name", "str"))

METADATA_OPS = (UsersOp, VhostOp, VhostDeleted, ExchangeOp, ExchangeDeleted, QueueOp,
                QueueDeleted, BindOp, UnbindOp, VhostLimitsOp, PolicyOp, PolicyDeleted,
                GlobalParametersOp, VhostTracingOp, ParameterOp, ParameterDeleted)


# the messages whose run ``decode_many(..., lend=True)`` lends instead of copying: a
# ``Dlvs``, which the front-end turns into frames (copying each body into them) while the
# ring link still holds its records (links/ring.py, "Deliveries framed where they lie"). Not
# ``Pubs``: the worker keeps its run's bytes in its store.
LENT_RUNS = (Dlvs,)
HOT_DECODE_LENT = {**HOT_DECODE, **{cls.TYPE_ID: HOT_DECODE[cls.TYPE_ID] + (True,)
                                    for cls in LENT_RUNS}}

for _cls in MESSAGES.values():      # pickle finds a message class by its name in this module
    if globals().get(_cls.__name__) is not _cls:
        raise TypeError(f"message {_cls.NAME} must be declared as {_cls.__name__} = message(...)")

__all__ = ["Record", "message", "handlers", "encode", "encode_bytes", "decode", "fields_of"]
