"""RabbitMQ's stream protocol on the wire: the frame splitter, the commands a client sends as
tuples, and the frames the server sends, no I/O (``docs/PROTOCOL.adoc`` of rabbitmq_stream).

A frame is ``size u32`` then ``key u16, version u16`` and the command's fields, big-endian:
strings are ``i16`` length + UTF-8 (-1: null), bytes ``i32`` length + bytes, arrays ``i32``
count + items. A request carries a correlation id after the version; its response has the
key with the top bit set (``0x8000 | key``), the same correlation id and a ``u16`` response
code. Publish, PublishConfirm, PublishError, Deliver, Credit, StoreOffset, MetadataUpdate
and Heartbeat have no correlation id and no response (a Credit for an unknown subscription
is answered, with the code first).

A ``Deliver`` carries an osiris chunk as RabbitMQ's log holds it: a 48-byte header (magic
and version 0x50, chunk type 0 = user, entries, records, timestamp, epoch, the first offset,
the CRC32 of the data, the data's length, a trailer's length, 4 reserved bytes), then each
message as a *simple entry* (``u32`` size with the top bit 0, then its bytes). Clients read
message ``i`` of a chunk at offset ``first + i`` and check the CRC.
"""
from __future__ import annotations

import struct
import zlib

from .sub_entry import SubEntry

try:                    # a Publish frame read in one pass, in C (``protocol/_fastpath.c``)
    from ..protocol._fastpath import stream_publish as _stream_publish
except ImportError:     # pragma: no cover - the extension is not built
    _stream_publish = None

# command keys (rabbit_stream.hrl; 26 consumer update, 27 exchange command versions: 3.11;
# 29, 30 create / delete super stream: 3.13)
DECLARE_PUBLISHER, PUBLISH, PUBLISH_CONFIRM, PUBLISH_ERROR = 1, 2, 3, 4
QUERY_PUBLISHER_SEQUENCE, DELETE_PUBLISHER, SUBSCRIBE, DELIVER, CREDIT = 5, 6, 7, 8, 9
STORE_OFFSET, QUERY_OFFSET, UNSUBSCRIBE, CREATE, DELETE, METADATA = 10, 11, 12, 13, 14, 15
METADATA_UPDATE, PEER_PROPERTIES, SASL_HANDSHAKE, SASL_AUTHENTICATE = 16, 17, 18, 19
TUNE, OPEN, CLOSE, HEARTBEAT, ROUTE, PARTITIONS = 20, 21, 22, 23, 24, 25
CONSUMER_UPDATE, EXCHANGE_COMMAND_VERSIONS = 26, 27
CREATE_SUPER_STREAM, DELETE_SUPER_STREAM = 29, 30
RESPONSE = 0x8000

# response codes
OK = 0x01
STREAM_DOES_NOT_EXIST = 0x02
SUBSCRIPTION_ID_ALREADY_EXISTS = 0x03
SUBSCRIPTION_ID_DOES_NOT_EXIST = 0x04
STREAM_ALREADY_EXISTS = 0x05
STREAM_NOT_AVAILABLE = 0x06
SASL_MECHANISM_NOT_SUPPORTED = 0x07
AUTHENTICATION_FAILURE = 0x08
SASL_ERROR = 0x09
SASL_CHALLENGE = 0x0A
SASL_AUTHENTICATION_FAILURE_LOOPBACK = 0x0B
VHOST_ACCESS_FAILURE = 0x0C
UNKNOWN_FRAME = 0x0D
FRAME_TOO_LARGE = 0x0E
INTERNAL_ERROR = 0x0F
ACCESS_REFUSED = 0x10
PRECONDITION_FAILED = 0x11
PUBLISHER_DOES_NOT_EXIST = 0x12
NO_OFFSET = 0x13

# offset specification types of a Subscribe
OFFSET_FIRST, OFFSET_LAST, OFFSET_NEXT, OFFSET_OFFSET, OFFSET_TIMESTAMP = 1, 2, 3, 4, 5

# what a peer may send at most before it has tuned: RabbitMQ's initial frame_max
INITIAL_FRAME_MAX = 8192
# ... and after (RabbitMQ has no bound): a frame larger than this closes the connection
INBOUND_FRAME_MAX = 256 << 20

_U8, _U16, _U32, _U64 = (struct.Struct(f">{c}") for c in "BHIQ")
_I16, _I32, _I64 = (struct.Struct(f">{c}") for c in "hiq")
_HEAD = struct.Struct(">IHH")                   # size, key, version
_RESPONSE = struct.Struct(">IHHIH")             # size, key, version, correlation id, code
_CHUNK = struct.Struct(">BBHIqQQIIII")          # osiris chunk header (48 bytes)
_ENTRY = struct.Struct(">I")
CHUNK_MAGIC_VERSION = 0x50                      # osiris: magic 5, version 0


class FrameError(Exception):
    """The bytes cannot be a frame of this protocol: the connection closes with ``code``."""

    def __init__(self, text: str, code: int = UNKNOWN_FRAME):
        super().__init__(text)
        self.code = code


class Splitter:
    """Incremental: ``feed`` bytes as they arrive, get the frames (``key, version, body``)
    they complete. A frame longer than ``frame_max`` (0: no limit) is refused."""

    def __init__(self, frame_max: int = INITIAL_FRAME_MAX):
        self.buf = bytearray()
        self.frame_max = frame_max

    def feed(self, data: bytes) -> list:
        buf = self.buf
        buf += data
        out = []
        pos, n = 0, len(buf)
        while n - pos >= 4:
            size = _U32.unpack_from(buf, pos)[0]
            if self.frame_max and size + 4 > self.frame_max:
                raise FrameError(f"frame too large: {size + 4} bytes, frame_max is "
                                 f"{self.frame_max}", FRAME_TOO_LARGE)
            if size < 4:
                raise FrameError(f"a frame of {size} bytes has no key and version")
            if n - pos - 4 < size:
                break
            key, version = struct.unpack_from(">HH", buf, pos + 4)
            out.append((key, version, bytes(buf[pos + 8:pos + 4 + size])))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out


class Reader:
    """The fields of one frame's body, read in order; any overrun is a ``FrameError``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, s: struct.Struct):
        try:
            v = s.unpack_from(self.data, self.pos)[0]
        except struct.error:
            raise FrameError("a frame ends before its fields") from None
        self.pos += s.size
        return v

    def u8(self) -> int:
        return self._take(_U8)

    def u16(self) -> int:
        return self._take(_U16)

    def u32(self) -> int:
        return self._take(_U32)

    def u64(self) -> int:
        return self._take(_U64)

    def i64(self) -> int:
        return self._take(_I64)

    def _sized(self, length: struct.Struct, what: str) -> bytes | None:
        """A length-prefixed field's bytes (-1: null)."""
        n = self._take(length)
        if n < 0:
            return None
        end = self.pos + n
        if end > len(self.data):
            raise FrameError(f"a {what} runs past the frame's end")
        v = self.data[self.pos:end]
        self.pos = end
        return v

    def string(self) -> str | None:
        v = self._sized(_I16, "string")
        try:
            return None if v is None else v.decode()
        except UnicodeDecodeError:
            raise FrameError("a string is not UTF-8") from None

    def bytes(self) -> bytes | None:
        return self._sized(_I32, "byte field")

    def sub_entry(self) -> SubEntry:
        """A sub-entry (``sub_entry.py``): its header, then its data as it came."""
        kind, count, size = self.u8(), self.u16(), self.u32()
        data = self._sized(_I32, "sub-entry")
        return SubEntry((kind >> 4) & 0x7, count, size, data or b"")

    def count(self) -> int:
        n = self._take(_I32)
        if n < 0 or n > len(self.data):
            raise FrameError(f"an array of {n} items in a frame of {len(self.data)} bytes")
        return n

    def strings(self) -> list:
        return [self.string() for _ in range(self.count())]

    def properties(self) -> dict:
        out = {}
        for _ in range(self.count()):
            key = self.string()
            out[key] = self.string()
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError(f"{len(self.data) - self.pos} bytes after a frame's fields")


def parse(key: int, version: int, body: bytes) -> tuple:
    """A client's frame as ``(name, correlation id or None, fields...)``; a frame this server
    does not take raises ``FrameError``."""
    if key == PUBLISH and _stream_publish is not None:
        fast = _stream_publish(body, version)   # None: a sub-entry, or not as it should be
        if fast is not None:
            return ("publish", None, *fast)
    r = Reader(body)
    if key == PUBLISH:
        pid = r.u8()
        messages = []
        for _ in range(r.count()):
            publishing_id = r.u64()
            if version == 1 and r.pos < len(body) and body[r.pos] & 0x80:
                messages.append((publishing_id, r.sub_entry(), None))   # sub_entry.py
                continue
            filter_value = r.string() if version >= 2 else None    # RabbitMQ 3.13's
            messages.append((publishing_id, r.bytes() or b"", filter_value))
        out = ("publish", None, pid, messages)
    elif key == CREDIT:
        out = ("credit", None, r.u8(), r.u16())
    elif key == STORE_OFFSET:
        out = ("store_offset", None, r.string(), r.string(), r.u64())
    elif key == HEARTBEAT:
        out = ("heartbeat", None)
    elif key == TUNE:
        out = ("tune", None, r.u32(), r.u32())
    elif key == (RESPONSE | CLOSE):
        out = ("close_ok", r.u32(), r.u16())
    elif key == (RESPONSE | CONSUMER_UPDATE):
        corr, code, kind = r.u32(), r.u16(), r.u16()
        value = r.u64() if r.pos < len(body) else None      # a type without one may omit it
        if kind == OFFSET_TIMESTAMP and value is not None and value >= 1 << 63:
            value -= 1 << 64
        spec = {OFFSET_FIRST: ("first", None), OFFSET_LAST: ("last", None),
                OFFSET_NEXT: ("next", None), OFFSET_OFFSET: ("offset", value),
                OFFSET_TIMESTAMP: ("timestamp", value)}.get(kind, (kind, None))
        if spec[0] in ("offset", "timestamp") and value is None:
            spec = (None, None)
        out = ("consumer_update_ok", corr, code, spec)
    elif key & RESPONSE:
        raise FrameError(f"unexpected response frame {key & 0x7FFF}")
    else:
        corr = r.u32()
        if key == DECLARE_PUBLISHER:
            out = ("declare_publisher", corr, r.u8(), r.string(), r.string())
        elif key == QUERY_PUBLISHER_SEQUENCE:
            out = ("query_publisher_sequence", corr, r.string(), r.string())
        elif key == DELETE_PUBLISHER:
            out = ("delete_publisher", corr, r.u8())
        elif key == SUBSCRIBE:
            sid, stream, kind = r.u8(), r.string(), r.u16()
            if kind == OFFSET_OFFSET:
                spec = ("offset", r.u64())
            elif kind == OFFSET_TIMESTAMP:
                spec = ("timestamp", r.i64())
            else:
                spec = ({OFFSET_FIRST: "first", OFFSET_LAST: "last",
                         OFFSET_NEXT: "next"}.get(kind, kind), None)
            credit = r.u16()
            props = r.properties() if r.pos < len(body) else {}
            out = ("subscribe", corr, sid, stream, spec, credit, props)
        elif key == QUERY_OFFSET:
            out = ("query_offset", corr, r.string(), r.string())
        elif key == UNSUBSCRIBE:
            out = ("unsubscribe", corr, r.u8())
        elif key == CREATE:
            out = ("create", corr, r.string(), r.properties())
        elif key == DELETE:
            out = ("delete", corr, r.string())
        elif key == METADATA:
            out = ("metadata", corr, r.strings())
        elif key == PEER_PROPERTIES:
            out = ("peer_properties", corr, r.properties())
        elif key == SASL_HANDSHAKE:
            out = ("sasl_handshake", corr)
        elif key == SASL_AUTHENTICATE:
            out = ("sasl_authenticate", corr, r.string(), r.bytes() or b"")
        elif key == OPEN:
            out = ("open", corr, r.string())
        elif key == CLOSE:
            out = ("close", corr, r.u16(), r.string())
        elif key == ROUTE:
            out = ("route", corr, r.string(), r.string())
        elif key == PARTITIONS:
            out = ("partitions", corr, r.string())
        elif key == CREATE_SUPER_STREAM:
            out = ("create_super_stream", corr, r.string(), r.strings(), r.strings(),
                   r.properties())
        elif key == DELETE_SUPER_STREAM:
            out = ("delete_super_stream", corr, r.string())
        elif key == EXCHANGE_COMMAND_VERSIONS:
            versions = [(r.u16(), r.u16(), r.u16()) for _ in range(r.count())]
            out = ("exchange_command_versions", corr, versions)
        else:
            raise FrameError(f"unknown command {key}")
    r.end()
    return out


# ------------------------------------------------------------------ frames out
def _string(v: str | None) -> bytes:
    if v is None:
        return _I16.pack(-1)
    b = v.encode()
    return _I16.pack(len(b)) + b


def _strings(items) -> bytes:
    items = list(items)
    return _I32.pack(len(items)) + b"".join(_string(s) for s in items)


def _properties(props: dict) -> bytes:
    return _I32.pack(len(props)) + b"".join(_string(k) + _string(v) for k, v in props.items())


def frame(key: int, payload: bytes, version: int = 1) -> bytes:
    return _HEAD.pack(4 + len(payload), key, version) + payload


def response(key: int, corr: int, code: int, extra: bytes = b"") -> bytes:
    """The response to request ``key``: its code, then ``extra`` (the command's fields)."""
    return _RESPONSE.pack(10 + len(extra), RESPONSE | key, 1, corr, code) + extra


def peer_properties_ok(corr: int, props: dict) -> bytes:
    return response(PEER_PROPERTIES, corr, OK, _properties(props))


def sasl_handshake_ok(corr: int, mechanisms) -> bytes:
    return response(SASL_HANDSHAKE, corr, OK, _strings(mechanisms))


def sasl_authenticate(corr: int, code: int) -> bytes:
    return response(SASL_AUTHENTICATE, corr, code)


def tune(frame_max: int, heartbeat: int) -> bytes:
    return frame(TUNE, _U32.pack(frame_max) + _U32.pack(heartbeat))


def open_ok(corr: int, props: dict) -> bytes:
    return response(OPEN, corr, OK, _properties(props))


def open_failed(corr: int, code: int) -> bytes:
    return response(OPEN, corr, code, _I32.pack(0))


def u64_response(key: int, corr: int, code: int, value: int) -> bytes:
    """QueryOffset's and QueryPublisherSequence's response."""
    return response(key, corr, code, _U64.pack(value))


def strings_response(key: int, corr: int, code: int, items) -> bytes:
    """Route's and Partitions' response."""
    return response(key, corr, code, _strings(items))


def metadata(corr: int, brokers: list, streams: list) -> bytes:
    """``brokers``: (reference, host, port); ``streams``: (name, code, leader, replicas)."""
    out = [_I32.pack(len(brokers))]
    out += [_U16.pack(ref) + _string(host) + _U32.pack(port) for ref, host, port in brokers]
    out.append(_I32.pack(len(streams)))
    for name, code, leader, replicas in streams:
        out.append(_string(name) + _U16.pack(code) + _U16.pack(leader)
                   + _I32.pack(len(replicas)) + b"".join(_U16.pack(r) for r in replicas))
    payload = b"".join(out)         # no response code of its own: one per stream
    return struct.pack(">IHHI", 8 + len(payload), RESPONSE | METADATA, 1, corr) + payload


def command_versions(corr: int, versions) -> bytes:
    return response(EXCHANGE_COMMAND_VERSIONS, corr, OK, _I32.pack(len(versions)) + b"".join(
        struct.pack(">HHH", *v) for v in versions))


def consumer_update(corr: int, sid: int, active: bool) -> bytes:
    """The server's request to a single active consumer: it is (or is no longer) the
    group's active one; the client answers with where it wants to start."""
    return frame(CONSUMER_UPDATE, _U32.pack(corr) + _U8.pack(sid) + _U8.pack(int(active)))


def credit_failed(code: int, sid: int) -> bytes:
    """The answer to a Credit of an unknown subscription: code, then its id."""
    return struct.pack(">IHHHB", 9, RESPONSE | CREDIT, 1, code, sid)


def publish_confirm(pid: int, ids) -> bytes:
    ids = list(ids)
    return frame(PUBLISH_CONFIRM, _U8.pack(pid) + _I32.pack(len(ids))
                 + struct.pack(f">{len(ids)}Q", *ids))


def publish_error(pid: int, errors) -> bytes:
    """``errors``: (publishing id, code) pairs."""
    errors = list(errors)
    return frame(PUBLISH_ERROR, _U8.pack(pid) + _I32.pack(len(errors))
                 + b"".join(struct.pack(">QH", i, code) for i, code in errors))


def metadata_update(code: int, stream: str) -> bytes:
    return frame(METADATA_UPDATE, _U16.pack(code) + _string(stream))


def heartbeat() -> bytes:
    return frame(HEARTBEAT, b"")


def close(corr: int, code: int, reason: str) -> bytes:
    return frame(CLOSE, _U32.pack(corr) + _U16.pack(code) + _string(reason))


def chunk(first_offset: int, timestamp_ms: int, messages: list, epoch: int = 1) -> bytes:
    """An osiris user chunk of ``messages`` (bytes each) starting at ``first_offset``; epoch
    1, osiris's for a stream whose leader never changed. No trailer (osiris's records each
    deduplicating publisher's last id there, and its length in the header though the bytes
    are not sent: ours says 0)."""
    data = b"".join(_ENTRY.pack(len(m)) + m for m in messages)
    n = len(messages)
    return _CHUNK.pack(CHUNK_MAGIC_VERSION, 0, n, n, timestamp_ms, epoch, first_offset,
                       zlib.crc32(data), len(data), 0, 0) + data


def deliver(sid: int, chunk_bytes: bytes) -> bytes:
    return frame(DELIVER, _U8.pack(sid) + chunk_bytes)
