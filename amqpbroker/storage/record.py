"""Record and record batch: the unit the broker appends and the unit stored in a segment.

Theory of operation
-------------------
`PartitionLog.append(records)` encodes the whole list as ONE batch and writes it with ONE
writev() call (of its parts: large bodies are not copied), so a batch is the unit of atomicity
on disk: after a crash a batch is either whole (its CRC matches) or it is the torn tail that
recovery cuts off. Offsets are assigned per batch (base offset + position in the batch), so
a batch never needs rewriting.

Batch layout (big-endian), `length` counts every byte after the length field itself:

    length        u32   = 36 + len(records)
    base_offset   u64   offset of the first record
    count         u32   number of records (>= 1)
    crc           u32   CRC32C over base_offset, count and everything after crc
    first_ts      u64   timestamp of the first record (ms since epoch)
    max_ts        u64   largest record timestamp in the batch
    leader_epoch  u32   the leader epoch the batch was written in (Kafka's
                        partitionLeaderEpoch; 0 for a queue that is not replicated): the
                        leader stamps its epoch, a follower keeps the stamp as fetched
                        (cluster/replication.py, storage/epochs.py)
    records       count x record

The epoch came with schema version 2 of the segment file (fileformat.py). A version 1 segment
(written before it) has the same layout without `leader_epoch` (a 36-byte header, `length` =
32 + records): its batches read as epoch 0, and nothing is appended to it any more (the log
rolls to a version 2 segment at the first append, log.py). `LAYOUTS` maps a segment's
version to its header.

Record layout:

    rec_len       u32   bytes after this field (lets a reader skip a record cheaply)
    timestamp     u64   absolute ms since epoch
    flags         u8    bit 0 = persistent (delivery_mode 2); other bits reserved, kept as is
    exchange      u8 length + UTF-8   (AMQP shortstr, <= 255 bytes)
    routing_key   u8 length + UTF-8   (AMQP shortstr, <= 255 bytes)
    properties    u32 length + bytes  (raw AMQP basic properties, opaque here)
    body          u32 length + bytes

Deviation from Kafka: the CRC also covers base_offset and count. Kafka leaves the base offset
out because leaders rewrite it; we never rewrite a batch, and a flipped count would silently
shift every later offset.
"""
from __future__ import annotations

import array
import functools
import struct
import time
from typing import NamedTuple

from crc32c import crc32c

LENGTH = struct.Struct(">I")
# length, base_offset, count, crc, first_ts, max_ts, leader_epoch
BATCH_HEADER = struct.Struct(">IQIIQQI")
BATCH_HEADER_SIZE = BATCH_HEADER.size  # 40
BATCH_OVERHEAD = BATCH_HEADER_SIZE - LENGTH.size  # minimum value of `length`: 36
BATCH_HEADER_V1 = struct.Struct(">IQIIQQ")  # a version 1 segment's: no leader_epoch (36)
LOG_VERSION = 2                             # the segment file version written now
LAYOUTS = {1: BATCH_HEADER_V1, 2: BATCH_HEADER}     # segment file version -> batch header
MAX_BATCH_BYTES = (1 << 31) - 1
_RECORD_HEAD = struct.Struct(">IQBB")  # rec_len, timestamp, flags, exchange length
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_RECORD_FIXED = 8 + 1 + 1 + 1 + 4 + 4  # bytes counted by rec_len besides the variable fields
_OFFSET_COUNT = struct.Struct(">QI")
_STAMPS = struct.Struct(">QQI")     # first_ts, max_ts, leader_epoch
SEPARATE_BODY = 8192  # bodies this big are written from the caller's object, not joined


def now_ms() -> int:
    """The clock of record timestamps: ms since the epoch."""
    return int(time.time() * 1000)


class Record(NamedTuple):
    """One message as stored: a tuple, so the C codec can build it without a Python call."""
    timestamp: int          # ms since epoch
    exchange: str
    routing_key: str
    properties: bytes       # raw AMQP basic-properties bytes; opaque to storage
    body: bytes
    flags: int = 0          # bit 0 = persistent (delivery_mode 2); other bits reserved


# a Record made from a tuple of its six fields without the NamedTuple's ``__new__`` (Python
# code): about half the cost, where one is made per message (a publish, a stream's round)
new_record = functools.partial(tuple.__new__, Record)


class RecordRun:
    """Records in the layout below, back to back, not decoded: a run of deliveries as a link
    that decodes hands it to the front-end (the contract's field type ``run``, ``Dlvs``),
    which turns it into ``basic.deliver`` frames in C (``protocol/fastpath.build_deliver_run``)
    with no ``Record`` per message. ``data`` is the records' bytes, ``count`` how many;
    iterating decodes them (the paths that need each record: a global prefetch, a cancelled
    consumer). Equal to a list of the same records. ``data`` may be a read-only memoryview:
    of part of a stored run's bytes (``worker/store.StoredRun.span``), or of a ring, which a
    ring link lends while its batch is handled and releases after (``links/ring.py``,
    "Deliveries framed where they lie"): whoever keeps a run past its handler keeps a copy
    (``keep``)."""
    __slots__ = ("data", "count")

    def __init__(self, data: bytes, count: int):
        self.data = data
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        data, pos = self.data, 0
        if type(data) is memoryview:        # a view: the records own their fields
            data = bytes(data)
        for _ in range(self.count):
            record, pos = decode_record(data, pos)
            yield record

    def __getitem__(self, i):
        return list(self)[i]

    def __eq__(self, other):
        if isinstance(other, (list, RecordRun)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"RecordRun({list(self)!r})"

    def keep(self) -> None:
        """Own ``data``: a lent view (a ring's memory) is copied to bytes and released."""
        data = self.data
        if type(data) is memoryview:
            self.data = bytes(data)
            data.release()

    @classmethod
    def of(cls, records: list) -> "RecordRun":
        """The run of ``records`` (tests, and the reference codec)."""
        return cls(b"".join(encode_record(r) for r in records), len(records))


class BatchHeader(NamedTuple):
    length: int
    base_offset: int
    count: int
    crc: int
    first_ts: int
    max_ts: int
    epoch: int = 0          # leader_epoch (0 in a version 1 segment)

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies on disk."""
        return self.length + LENGTH.size

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.count


def encode_batch(base_offset: int, records: list[Record], epoch: int = 0
                 ) -> tuple[bytes, int, int]:
    """Encode `records` as one batch; returns (batch bytes, first_ts, max_ts)."""
    parts, _size, first_ts, max_ts = encode_batch_parts(base_offset, records, epoch)
    return b"".join(parts), first_ts, max_ts


def pack_records_py(records: list[Record], separate_body: int) -> tuple[list, int, int, int]:
    """The per-record loop of ``encode_batch_parts``: ([b"", part, ...], size, first_ts,
    max_ts), part 0 left for the batch header (the reference of ``_record.pack_records``)."""
    parts: list = [b""]        # [0] is the batch header, filled in last
    small: list[bytes] = []    # small fields waiting to be joined into one part
    size = 0                   # bytes after the header
    first_ts = records[0].timestamp
    max_ts = first_ts
    for r in records:
        ex = r.exchange.encode()
        rk = r.routing_key.encode()
        if len(ex) > 255 or len(rk) > 255:
            raise ValueError("exchange and routing key are AMQP shortstrs: at most 255 bytes")
        ts = r.timestamp
        if ts > max_ts:
            max_ts = ts
        props, body = r.properties, r.body
        blen = len(body)
        rec_len = _RECORD_FIXED + len(ex) + len(rk) + len(props) + blen
        size += 4 + rec_len
        small.append(_RECORD_HEAD.pack(rec_len, ts, r.flags, len(ex)) + ex
                     + _U8.pack(len(rk)) + rk + _U32.pack(len(props)))
        small.append(props)
        small.append(_U32.pack(blen))
        if blen >= separate_body:
            parts.append(b"".join(small))
            small.clear()
            parts.append(body)
        else:
            small.append(body)
    if small:
        parts.append(b"".join(small))
    return parts, size, first_ts, max_ts


def encode_batch_parts(base_offset: int, records: list[Record], epoch: int = 0
                       ) -> tuple[list, int, int, int]:
    """Encode `records` as one batch, stamped with leader epoch `epoch`, without copying
    large bodies.

    Returns (parts, size, first_ts, max_ts): the batch is the concatenation of `parts` (the
    40-byte header first), `size` bytes in all; write it with one os.writev. Small fields are
    joined into one part between bodies of at least SEPARATE_BODY bytes, which stay the
    caller's objects, so a 64 KiB body is never copied here; the CRC runs over the parts.
    """
    try:
        parts, size, first_ts, max_ts = pack_records(records, SEPARATE_BODY)
    except TypeError:          # not a list of bytes-holding records: the reference takes any
        parts, size, first_ts, max_ts = pack_records_py(records, SEPARATE_BODY)
    length = BATCH_OVERHEAD + size
    if length > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {length} bytes exceeds the {MAX_BATCH_BYTES} byte limit")
    head = _OFFSET_COUNT.pack(base_offset, len(records))
    stamps = _STAMPS.pack(first_ts, max_ts, epoch)
    crc = crc32c(stamps, crc32c(head))
    for i in range(1, len(parts)):
        crc = crc32c(parts[i], crc)
    parts[0] = BATCH_HEADER.pack(length, base_offset, len(records), crc, first_ts, max_ts,
                                 epoch)
    return parts, BATCH_HEADER_SIZE + size, first_ts, max_ts


def encode_raw_batch_parts(base_offset: int, chunks: list, epoch: int = 0
                           ) -> tuple[list, int, int, int, int]:
    """``encode_batch_parts`` of records already in the layout above: ``chunks`` is a list
    of (bytes of records back to back, how many). Returns (parts, size, count, first_ts,
    max_ts): chunks under SEPARATE_BODY bytes are joined, bigger ones stay the caller's
    objects (a ``Pubs``'s bytes are written as they came); every chunk is checked as
    ``scan_run`` checks a run."""
    parts: list = [b""]
    small: list = []
    small_count = count = 0
    first_ts = max_ts = None
    pieces = []
    for data, n in chunks:
        if len(data) >= SEPARATE_BODY:
            if small:
                pieces.append((b"".join(small) if len(small) > 1 else small[0], small_count))
                small, small_count = [], 0
            pieces.append((data, n))
        else:
            small.append(data)
            small_count += n
    if small:
        pieces.append((b"".join(small) if len(small) > 1 else small[0], small_count))
    size = 0
    for data, n in pieces:
        facts = scan_run(data, n, 0)
        if first_ts is None:
            first_ts = facts[6]
            max_ts = facts[7]
        elif facts[7] > max_ts:
            max_ts = facts[7]
        parts.append(data)
        size += len(data)
        count += n
    if not count:
        raise IndexError("no records")
    length = BATCH_OVERHEAD + size
    if length > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {length} bytes exceeds the {MAX_BATCH_BYTES} byte limit")
    head = _OFFSET_COUNT.pack(base_offset, count)
    stamps = _STAMPS.pack(first_ts, max_ts, epoch)
    crc = crc32c(stamps, crc32c(head))
    for i in range(1, len(parts)):
        crc = crc32c(parts[i], crc)
    parts[0] = BATCH_HEADER.pack(length, base_offset, count, crc, first_ts, max_ts, epoch)
    return parts, BATCH_HEADER_SIZE + size, count, first_ts, max_ts


def decode_header(buf, pos: int = 0, version: int = LOG_VERSION) -> BatchHeader:
    """The header of the batch at `pos`, in the layout of a segment of file `version`."""
    return BatchHeader(*LAYOUTS[version].unpack_from(buf, pos))


def crc_ok(batch) -> bool:
    """True if the CRC stored in a complete batch (bytes or memoryview) matches its contents
    (either layout: the CRC covers all after it)."""
    view = memoryview(batch)
    stored = _U32.unpack_from(view, 16)[0]
    return crc32c(view[20:], crc32c(view[4:16])) == stored


def header_plausible(h: BatchHeader, version: int = LOG_VERSION) -> bool:
    """Cheap structural checks done before trusting a length to read the rest of a batch."""
    return (LAYOUTS[version].size - LENGTH.size < h.length <= MAX_BATCH_BYTES
            and h.count >= 1 and h.first_ts <= h.max_ts)


def pack_record_py(prefix: bytes, ts: int, flags: int, exchange: str, routing_key: str,
                   properties: bytes, body: bytes) -> bytes:
    """``prefix`` followed by one record in the layout above (the reference implementation
    of ``_record.pack_record``)."""
    ex = exchange.encode()
    rk = routing_key.encode()
    if len(ex) > 255 or len(rk) > 255:
        raise ValueError("exchange and routing key are AMQP shortstrs: at most 255 bytes")
    rec_len = _RECORD_FIXED + len(ex) + len(rk) + len(properties) + len(body)
    return b"".join((prefix, _RECORD_HEAD.pack(rec_len, ts, flags, len(ex)), ex,
                     _U8.pack(len(rk)), rk, _U32.pack(len(properties)), properties,
                     _U32.pack(len(body)), body))


def unpack_record_py(buf, pos: int) -> tuple:
    """(timestamp, exchange, routing_key, properties, body, flags, end) of the record at
    ``pos`` (the reference implementation of ``_record.unpack_record``)."""
    if pos + 4 + _RECORD_FIXED > len(buf):
        raise ValueError("truncated record")
    rec_len, ts, flags, ex_len = _RECORD_HEAD.unpack_from(buf, pos)
    end = pos + 4 + rec_len
    if rec_len < _RECORD_FIXED or end > len(buf):
        raise ValueError("truncated record")
    p = pos + 14
    exchange = bytes(buf[p:p + ex_len]).decode()
    p += ex_len
    rk_len = buf[p]
    routing_key = bytes(buf[p + 1:p + 1 + rk_len]).decode()
    p += 1 + rk_len
    props_len = _U32.unpack_from(buf, p)[0]
    properties = bytes(buf[p + 4:p + 4 + props_len])
    p += 4 + props_len
    body_len = _U32.unpack_from(buf, p)[0]
    body = bytes(buf[p + 4:p + 4 + body_len])
    if p + 4 + body_len != end:
        raise ValueError("record length does not match its fields")
    return ts, exchange, routing_key, properties, body, flags, end


def pack_message_py(prefix: bytes, type_id: int, fmt: str, msg: tuple) -> bytes:
    """A hot message of the contract: ``prefix``, the type byte, the fixed fields of ``fmt``
    (struct characters B I Q ?), then the record that is the message's last item; a ``fmt``
    ending in ``*`` (``pubs``): the last item is a list of records, sent as a u32 count and
    the records back to back; ending in ``#`` (``dlvs``): the same on the wire, the last item
    a list of records or a ``RecordRun``."""
    fixed = fmt.rstrip("*#")
    head = prefix + struct.pack(">B" + fixed, type_id, *msg[:-1])
    if isinstance(msg[-1], RecordRun) and fmt.endswith("#"):
        return b"".join([head, _U32.pack(msg[-1].count), msg[-1].data])
    if fixed != fmt:
        return b"".join([head, _U32.pack(len(msg[-1])),
                         *(_pack_one_py(b"", r) for r in msg[-1])])
    return _pack_one_py(head, msg[-1])


def _pack_one_py(prefix: bytes, r) -> bytes:
    return pack_record_py(prefix, r.timestamp, r.flags, r.exchange, r.routing_key,
                          r.properties, r.body)


def unpack_message_py(buf, pos: int, fmt: str, message_cls, record_cls):
    return _unpack_message_end_py(buf, pos, fmt, message_cls, record_cls)[0]


def _unpack_message_end_py(buf, pos: int, fmt: str, message_cls, record_cls,
                           borrow: bool = False):
    """(message, end of its last record); a ``fmt`` ending in ``#``: its last item is
    ``record_cls(data, count)``, a run (``RecordRun``); ``borrow``: ``data`` is a read-only
    view of ``buf`` (a memoryview), not a copy."""
    fixed = fmt.rstrip("*#")
    head = struct.Struct(">B" + fixed)
    values = head.unpack_from(buf, pos)[1:]
    pos += head.size
    if fixed == fmt:
        *fields, end = unpack_record_py(buf, pos)
        return message_cls(*values, record_cls(*fields)), end
    count = _U32.unpack_from(buf, pos)[0]
    pos += 4
    if fmt.endswith("#"):
        start = pos
        for _ in range(count):
            pos = unpack_record_py(buf, pos)[-1]
        data = memoryview(buf)[start:pos].toreadonly() if borrow else bytes(buf[start:pos])
        return message_cls(*values, record_cls(data, count)), pos
    records = []
    for _ in range(count):
        *fields, pos = unpack_record_py(buf, pos)
        records.append(record_cls(*fields))
    return message_cls(*values, records), pos


def pack_messages_py(msgs: list, hot: dict, fallback, prefix: bytes, limit: int):
    """Messages back to back for a ring: ``(data, lens, count)``, ``lens`` native uint32;
    a message of a class in ``hot`` ({class: (type_id, fmt)}) packed as ``pack_message``,
    any other as ``fallback(msg)``; stops before the first one longer than ``limit``."""
    parts, lens = [], array.array("I")
    for msg in msgs:
        entry = hot.get(type(msg))
        data = (pack_message_py(prefix, entry[0], entry[1], msg) if entry is not None
                else fallback(msg))
        if len(data) > limit:
            break
        parts.append(data)
        lens.append(len(data))
    return b"".join(parts), lens.tobytes(), len(parts)


def size_messages_py(msgs: list, hot: dict, fallback, prefix: bytes, limit: int):
    """``pack_messages`` in two steps, for a caller that writes into space it reserves in
    between (a ring's ``push_with``): ``(sized, lens, count)``, then
    ``pack_messages_at(sized, buf, offs, n)`` writes the first ``n`` of the ``count``
    messages, each at its offset of ``buf`` (``offs``: native uint64). Here ``sized`` is
    the messages' encodings; the C version keeps only their sizes and packs each message
    straight into ``buf``."""
    data, lens, count = pack_messages_py(msgs, hot, fallback, prefix, limit)
    parts, pos = [], 0
    for size in array.array("I", lens):
        parts.append(data[pos:pos + size])
        pos += size
    return parts, lens, count


def pack_messages_at_py(sized: list, buf, offs, n: int) -> None:
    if n < 0 or n > len(sized) or len(offs) < 8 * n:
        raise ValueError("more messages than were sized, or than offsets")
    view = memoryview(buf)
    for i, off in enumerate(array.array("Q", bytes(offs[:8 * n]))):
        if off + len(sized[i]) > len(view):
            raise ValueError("message outside the buffer")
        view[off:off + len(sized[i])] = sized[i]


def unpack_messages_py(buf, offs, n: int, hot: dict, record_cls, fallback) -> list:
    """The ``n`` records at the native uint64 ``[start, end)`` pairs ``offs`` of ``buf``: a
    whole hot message (first byte 0, then a type in ``hot``, {type_id: (fmt, class)}, or
    (fmt, class, run class) for a format ending in ``#``, or (fmt, class, run class, True)
    to borrow: the run's data a read-only view of ``buf``, not a copy) unpacked in place, any
    other record ``fallback(bytes)`` (None results dropped)."""
    pairs = array.array("Q", bytes(offs[:16 * n]))
    out = []
    for i in range(n):
        start, end = pairs[2 * i], pairs[2 * i + 1]
        entry = hot.get(buf[start + 1]) if end - start >= 2 and buf[start] == 0 else None
        if entry is None:
            msg = fallback(bytes(buf[start:end]))
            if msg is not None:
                out.append(msg)
            continue
        view = memoryview(buf)[:end]
        fmt, cls = entry[:2]
        last_cls = entry[2] if len(entry) >= 3 else record_cls
        borrow = len(entry) == 4 and entry[3]
        try:
            msg, msg_end = _unpack_message_end_py(view, start + 1, fmt, cls, last_cls, borrow)
        except (struct.error, IndexError):
            raise ValueError("truncated message") from None
        if msg_end != end:
            raise ValueError("message shorter than its ring record")
        out.append(msg)
    return out


def scan_run_py(data, count: int, light_below: int) -> tuple:
    """The reference of ``_record.scan_run``: what a store needs to keep ``count`` records in
    the layout above, back to back in ``data`` (a ``Pubs``'s run), as the bytes they came in:
    (starts, sizes, bodies, light, first_persistent, expiring, first_ts, max_ts, max_body) —
    ``starts`` each record's position and then the end, ``sizes`` each body's length (native
    uint32 arrays as bytes), ``bodies`` their sum, ``light`` how many are shorter than
    ``light_below``, ``first_persistent`` the index of the first with flags bit 0 (-1: none),
    ``expiring`` whether any has the expiration property, the first and the largest
    timestamp, the largest body. A truncated record, or bytes after the last, is refused."""
    if count < 0:
        raise ValueError("a run is a count >= 0 of records under 4 GiB")
    starts, sizes = array.array("I"), array.array("I")
    pos = light = bodies = max_body = first_ts = max_ts = 0
    first_persistent, expiring = -1, False
    for i in range(count):
        ts, _ex, _rk, props, body, flags, end = unpack_record_py(data, pos)
        if i == 0:
            first_ts = max_ts = ts
        max_ts = max(max_ts, ts)
        if flags & 1 and first_persistent < 0:
            first_persistent = i
        if props and props[0] & 1:
            expiring = True
        n = len(body)
        light += n < light_below
        max_body = max(max_body, n)
        bodies += n
        starts.append(pos)
        sizes.append(n)
        pos = end
    if pos != len(data):
        raise ValueError("bytes after the run's last record")
    starts.append(pos)
    return (starts.tobytes(), sizes.tobytes(), bodies, light, first_persistent, expiring,
            first_ts, max_ts, max_body)


def bodyless_at_py(data, starts, sizes, k: int) -> bytes:
    """The reference of ``_record.bodyless_at``: the ``k``-th record of a run (``data``,
    ``starts`` and ``sizes`` as ``scan_run`` gives them) with its body left out — the same
    fields, an empty body, its length prefix less the body's length."""
    starts, sizes = memoryview(starts).cast("I"), memoryview(sizes).cast("I")
    if not 0 <= k < len(sizes) or k + 1 >= len(starts):
        raise IndexError("no such record in the run")
    start, end, size = starts[k], starts[k + 1], sizes[k]
    if end > len(data) or start > end or end - start < 8 + size:
        raise ValueError("truncated record")
    return b"".join((_U32.pack(end - start - 4 - size), data[start + 4:end - size - 4],
                     b"\0\0\0\0"))


try:                     # the same eight functions in C (``_record.c``), built by setup.py
    from ._record import (pack_message, pack_messages, pack_messages_at, pack_record,
                          size_messages, unpack_message, unpack_messages, unpack_record)
    NATIVE = True
except ImportError:      # pragma: no cover - a build without a C compiler
    pack_record, unpack_record = pack_record_py, unpack_record_py
    pack_message, unpack_message = pack_message_py, unpack_message_py
    pack_messages, unpack_messages = pack_messages_py, unpack_messages_py
    size_messages, pack_messages_at = size_messages_py, pack_messages_at_py
    NATIVE = False
try:                     # and the batch loop (an extension built before it lacks it)
    from ._record import pack_records
except ImportError:      # pragma: no cover
    pack_records = pack_records_py
try:                     # and a batch's records (``decode_records``)
    from ._record import unpack_records as _unpack_records
except ImportError:      # pragma: no cover
    _unpack_records = None
try:                     # and a run's facts (worker/store.py, ``StoredRun``)
    from ._record import scan_run
except ImportError:      # pragma: no cover
    scan_run = scan_run_py
try:                     # and a run's record without its body (``StoredRun.bodyless``)
    from ._record import bodyless_at
except ImportError:      # pragma: no cover
    bodyless_at = bodyless_at_py


def encode_record(r: Record, prefix: bytes = b"") -> bytes:
    """``prefix`` then record ``r`` in the layout above, as one bytes object: how a publish
    or a delivery carries its message between processes (the body is copied once)."""
    return pack_record(prefix, r.timestamp, r.flags, r.exchange, r.routing_key, r.properties,
                       r.body)


def decode_record(buf, pos: int) -> tuple[Record, int]:
    """The record at ``pos`` of ``buf`` and the position after it."""
    ts, exchange, routing_key, properties, body, flags, end = unpack_record(buf, pos)
    return Record(ts, exchange, routing_key, properties, body, flags), end


def decode_records(batch, head_size: int = BATCH_HEADER_SIZE) -> list[Record]:
    """Decode every record of a complete, CRC-checked batch (its header `head_size` bytes:
    a version 1 segment's are shorter): in C (``_record.unpack_records``) when built."""
    if _unpack_records is not None:
        return _unpack_records(batch, head_size, Record)
    return decode_records_py(batch, head_size)


def decode_records_py(batch, head_size: int = BATCH_HEADER_SIZE) -> list[Record]:
    """``decode_records`` in Python: the reference."""
    buf = bytes(batch)
    count = _U32.unpack_from(buf, 12)[0]
    pos = head_size
    out: list[Record] = []
    unpack_head = _RECORD_HEAD.unpack_from
    unpack_u32 = _U32.unpack_from
    for _ in range(count):
        rec_len, ts, flags, ex_len = unpack_head(buf, pos)
        end = pos + 4 + rec_len
        p = pos + 14
        exchange = buf[p:p + ex_len].decode()
        p += ex_len
        rk_len = buf[p]
        routing_key = buf[p + 1:p + 1 + rk_len].decode()
        p += 1 + rk_len
        props_len = unpack_u32(buf, p)[0]
        properties = buf[p + 4:p + 4 + props_len]
        p += 4 + props_len
        body_len = unpack_u32(buf, p)[0]
        body = buf[p + 4:p + 4 + body_len]
        if p + 4 + body_len != end:
            raise ValueError("record length does not match its fields")
        out.append(Record(ts, exchange, routing_key, properties, body, flags))
        pos = end
    if pos != len(buf):
        raise ValueError("batch length does not match its records")
    return out


def record_size(r: Record) -> int:
    """Approximate bytes a record costs a reader (used for read()'s max_bytes)."""
    return 4 + _RECORD_FIXED + len(r.exchange) + len(r.routing_key) + len(r.properties) + len(r.body)
