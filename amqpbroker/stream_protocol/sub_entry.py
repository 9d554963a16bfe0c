"""Sub-entry batching: several messages published under one publishing id, optionally
compressed (the stream protocol's ``Publish`` version 1; rstream's ``send_sub_entry``, the
Java and Go clients' ``subEntrySize`` with ``compression``), no I/O.

On the wire, where a message of a ``Publish`` would be (after its ``u64`` publishing id),
a sub-entry starts with a byte whose top bit is set:

    entry type  u8    1, compression (3 bits: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), 4 unused
    count       u16   messages in it
    size        u32   their bytes uncompressed
    length      u32   the data's bytes, then the data

The data, once uncompressed, is ``count`` messages, each ``u32`` size then its bytes.

RabbitMQ's plugin stores a sub-entry as it came, one entry of ``count`` records in its osiris
chunk: every message has an offset of its own and clients uncompress on delivery. Here a
stream's messages are AMQP 0-9-1 messages that AMQP consumers read too, so a sub-entry is
uncompressed on the way in and stored as its ``count`` messages: stream consumers see the
same offsets and messages they would see from RabbitMQ (sent as simple entries, which every
client reads), and AMQP consumers see the messages instead of a compressed blob. The
publishing id is confirmed once, when the last of them is stored.

Compression: none and gzip (what rstream has); snappy, lz4 and zstd are refused with
PublishError 0x11 (precondition failed) for that publishing id: the connection goes on.
A sub-entry that declares more than ``MAX_SIZE`` uncompressed bytes, whose data does not
uncompress to exactly ``size`` bytes, or does not split into ``count`` messages, is refused
the same way: gzip could otherwise make a small frame into gigabytes in the broker.
"""
from __future__ import annotations

import struct
import zlib

NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
MAX_SIZE = 128 * 1024 * 1024        # RabbitMQ's default max message size, for the whole entry

_SIZE = struct.Struct(">I")


class Refused(Exception):
    """A sub-entry this broker cannot store (why, in words for the log)."""


class SubEntry:
    """A sub-entry as read from a ``Publish`` frame, its data still compressed."""

    __slots__ = ("compression", "count", "size", "data")

    def __init__(self, compression: int, count: int, size: int, data: bytes):
        self.compression = compression
        self.count = count
        self.size = size
        self.data = data

    def messages(self) -> list[bytes]:
        """Its messages, uncompressed and split; ``Refused`` when that cannot be done."""
        if self.compression not in (NONE, GZIP):
            raise Refused(f"sub-entry compression {NAMES.get(self.compression, self.compression)}"
                          " is not supported (none and gzip are)")
        if self.size > MAX_SIZE:
            raise Refused(f"sub-entry of {self.size} bytes uncompressed, over {MAX_SIZE}")
        data = self.data if self.compression == NONE else _gunzip(self.data, self.size)
        if len(data) != self.size:
            raise Refused(f"sub-entry data is {len(data)} bytes uncompressed, "
                          f"its header says {self.size}")
        out = []
        pos = 0
        for _ in range(self.count):
            if pos + 4 > len(data):
                raise Refused(f"sub-entry ends after {len(out)} of its {self.count} messages")
            n = _SIZE.unpack_from(data, pos)[0]
            pos += 4
            if pos + n > len(data):
                raise Refused(f"sub-entry message {len(out)} runs past the entry's end")
            out.append(data[pos:pos + n])
            pos += n
        if pos != len(data):
            raise Refused(f"{len(data) - pos} bytes after a sub-entry's {self.count} messages")
        if not out:
            raise Refused("a sub-entry of no messages")
        return out


def _gunzip(data: bytes, size: int) -> bytes:
    """A gzip stream's bytes, at most ``size`` + 1 of them (enough to tell it is too long)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, size + 1)
    except zlib.error as exc:
        raise Refused(f"sub-entry is not gzip data: {exc}") from None
    if not d.eof and len(out) <= size:
        raise Refused("sub-entry gzip data is cut short")
    return out


def encode(messages: list[bytes], compression: int = NONE) -> bytes:
    """A sub-entry's bytes as a client writes them after its publishing id (tests)."""
    raw = b"".join(_SIZE.pack(len(m)) + m for m in messages)
    data = raw if compression == NONE else zlib.compress(raw, wbits=16 + zlib.MAX_WBITS)
    return struct.pack(">BHII", 0x80 | compression << 4, len(messages), len(raw),
                       len(data)) + data
