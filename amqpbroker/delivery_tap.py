"""The AMQP connection a protocol adapter (the STOMP listener) holds for each of its clients:
pika's asyncio connection, except that the deliveries of the channels it taps are read here.

pika decodes each delivery through its generic codec (the method, a ``BasicProperties`` with
every field and the headers table, the body frames) and hands it to the consumer callback:
about half of the adapter's CPU per message (bench/RESULTS.md, "STOMP"). A delivery is three
frames of fixed layout, so here the bytes of a tapped channel's ``basic.deliver`` and its
content are taken off the stream before pika sees them, and handed over as a ``Delivery``
with the properties still raw (the adapter reads the few it needs). Everything else -- other
channels, the tapped channel's other methods (consume-ok, cancel, confirms), the connection's
own -- goes to pika in the order it came: frames before a delivery are given to pika before
the delivery is handed over, so a consumer never sees a delivery ahead of what preceded it.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from pika.adapters.asyncio_connection import AsyncioConnection

FRAME_HEAD = struct.Struct(">BHI")
METHOD, HEADER, BODY = 1, 2, 3
FRAME_END = 0xCE
_DELIVER = struct.pack(">HH", 60, 60)
_U64 = struct.Struct(">Q")


class Delivery(NamedTuple):
    """A tapped channel's delivery, its properties still raw (flags and values:
    ``amqpbroker/protocol/properties``)."""
    channel: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


def whole_delivery_py(buf, pos: int, end: int, channel: int, n: int, cls=Delivery):
    """The basic.deliver whose method frame is ``buf[pos:end]``, with its content header and
    body frames, all whole in ``buf[:n]``, back to back, on its channel: (``cls`` of the
    fields, the position after it), or None when it is not that (incomplete, interleaved,
    malformed, undecodable). The reference of ``_fastpath.c``'s ``whole_delivery``."""
    args = deliver_args(buf, pos + 11, end - 1)  # after the frame head and method ids
    if args is None:
        return None
    h = end                                      # the content header frame
    if n - h < 8:
        return None
    kind, ch, hsize = FRAME_HEAD.unpack_from(buf, h)
    if kind != HEADER or ch != channel or hsize < 12 or n - h - 8 < hsize \
            or buf[h + 7 + hsize] != FRAME_END:
        return None
    hend = h + 8 + hsize
    remaining = _U64.unpack_from(buf, h + 11)[0]
    q, parts = hend, []
    while remaining > 0:                         # the body frames
        if n - q < 8:
            return None
        kind, ch, fsize = FRAME_HEAD.unpack_from(buf, q)
        if kind != BODY or ch != channel or n - q - 8 < fsize or fsize > remaining \
                or buf[q + 7 + fsize] != FRAME_END:
            return None
        parts.append(bytes(buf[q + 7:q + 7 + fsize]))
        remaining -= fsize
        q += 8 + fsize
    return cls._make((channel, *args, bytes(buf[h + 19:hend - 1]), b"".join(parts))), q


def deliver_args(buf, i: int, m: int):
    """basic.deliver's arguments in ``buf[i:m]`` (from the consumer tag on): (consumer tag,
    delivery tag, redelivered, exchange, routing key), or None when they do not fit or a
    name is not UTF-8."""
    if i >= m:
        return None
    ctag, i = i + 1, i + 1 + buf[i]
    if i + 9 > m:
        return None
    tag = _U64.unpack_from(buf, i)[0]
    redelivered = bool(buf[i + 8] & 1)
    ctag_end, i = i, i + 9
    if i >= m:
        return None
    ex, i = i + 1, i + 1 + buf[i]
    if i >= m:
        return None
    ex_end = i
    rk, rk_end = i + 1, i + 1 + buf[i]
    if rk_end > m:
        return None
    try:
        return (bytes(buf[ctag:ctag_end]).decode(), tag, redelivered,
                bytes(buf[ex:ex_end]).decode(), bytes(buf[rk:rk_end]).decode())
    except UnicodeDecodeError:
        return None


def split_deliveries_py(buf, pos: int, taps, cls, out: list) -> int:
    """From ``pos``, whole frames: each run of frames that is not a tapped channel's
    basic.deliver appended to ``out`` as one bytes object (for pika), each tapped delivery
    whose frames are all in ``buf``, back to back, as a ``cls``. Stops at the first frame
    that is not whole or not well ended, and at a tapped delivery it cannot take whole (the
    caller's frame-by-frame path goes on from there); returns where it stopped. The
    reference of ``_fastpath.split_deliveries``."""
    if not 0 <= pos <= len(buf):
        raise ValueError("pos out of range")
    n, start = len(buf), pos
    while n - pos >= 8:
        kind, channel, size = FRAME_HEAD.unpack_from(buf, pos)
        if n - pos - 8 < size or buf[pos + 7 + size] != FRAME_END:
            break
        end = pos + 8 + size
        if kind != METHOD or size < 4 or buf[pos + 7:pos + 11] != _DELIVER \
                or channel not in taps:
            pos = end                            # pika's
            continue
        got = whole_delivery_py(buf, pos, end, channel, n, cls)
        if got is None:
            break
        if pos > start:
            out.append(bytes(buf[start:pos]))
        out.append(got[0])
        pos = start = got[1]
    if pos > start:
        out.append(bytes(buf[start:pos]))
    return pos


try:                        # the same in C (``protocol/_fastpath.c``), built by setup.py
    from .protocol._fastpath import split_deliveries
except ImportError:         # pragma: no cover - the extension is not built
    split_deliveries = split_deliveries_py


class _Open:
    """A tapped delivery whose content is still coming (the frame-by-frame path)."""
    __slots__ = ("fields", "size", "properties", "chunks")

    def __init__(self, channel: int, payload: bytes):
        args = deliver_args(payload, 4, len(payload))
        if args is None:
            raise ValueError(f"a basic.deliver on channel {channel} that does not read")
        self.fields = (channel, *args)
        self.properties = b""
        self.size = -1                  # from the content header
        self.chunks: list = []

    def done(self, body: bytes) -> Delivery:
        return Delivery(*self.fields, self.properties, body)


class DeliveryReader:
    """The AMQP frames from the broker, split: ``feed`` gives, in the order they came, the
    bytes of whole frames that are not a tapped channel's delivery (for pika) and each
    tapped delivery once its last frame is in. No I/O.

    Deliveries whose frames came together are taken in one C call per read
    (``split_deliveries``); what it leaves -- a delivery cut by the end of a read, or whose
    frames another channel's come between -- is read a frame at a time (``_frame``)."""

    def __init__(self):
        self.taps: set[int] = set()
        self.buf = bytearray()
        self.open: dict = {}            # channel -> the _Open delivery whose content is coming

    def feed(self, data: bytes) -> list:
        buf = self.buf
        buf += data
        out: list = []
        pos = 0
        while True:
            if not self.open:
                pos = split_deliveries(buf, pos, self.taps, Delivery, out)
            end = self._frame(buf, pos, out)
            if end is None:
                break
            pos = end
        del buf[:pos]
        return out

    def _frame(self, buf: bytearray, pos: int, out: list) -> int | None:
        """The whole frame at ``pos``, if there is one: for pika, or part of a tapped
        delivery (appended to ``out`` once complete). The position after it, or None."""
        if len(buf) - pos < 7:
            return None
        kind, channel, size = FRAME_HEAD.unpack_from(buf, pos)
        end = pos + 8 + size
        if end > len(buf):
            return None
        open_ = self.open
        if channel in self.taps and (channel in open_ or (
                kind == METHOD and buf[pos + 7:pos + 11] == _DELIVER)):
            payload = bytes(buf[pos + 7:end - 1])
            d = open_.get(channel)
            if d is None:
                open_[channel] = _Open(channel, payload)
            elif kind == HEADER:
                d.size = _U64.unpack_from(payload, 4)[0]
                d.properties = payload[12:]
                if d.size == 0:
                    del open_[channel]
                    out.append(d.done(b""))
            else:                                   # a body frame
                d.chunks.append(payload)
                d.size -= len(payload)
                if d.size <= 0:
                    del open_[channel]
                    out.append(d.done(d.chunks[0] if len(d.chunks) == 1
                                      else b"".join(d.chunks)))
        else:
            out.append(bytes(buf[pos:end]))
        return end


class TappedConnection(AsyncioConnection):
    """``tap(channel_number, callback)``: that channel's deliveries go to ``callback``."""

    def __init__(self, *args, **kwargs):
        self._taps: dict = {}
        self._reader = DeliveryReader()
        super().__init__(*args, **kwargs)

    def tap(self, channel_number: int, callback) -> None:
        self._taps[channel_number] = callback
        self._reader.taps.add(channel_number)

    def _on_data_available(self, data_in: bytes) -> None:
        # every byte goes through the reader, so pika is only ever given whole frames and a
        # tap added later finds the stream at a frame's start
        for item in self._reader.feed(data_in):
            if isinstance(item, Delivery):
                callback = self._taps.get(item.channel)
                if callback is not None:
                    callback(item)
            else:
                super()._on_data_available(item)
