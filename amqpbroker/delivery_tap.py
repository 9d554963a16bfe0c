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

from pika.adapters.asyncio_connection import AsyncioConnection

FRAME_HEAD = struct.Struct(">BHI")
METHOD, HEADER, BODY = 1, 2, 3
_DELIVER = struct.pack(">HH", 60, 60)
_U64 = struct.Struct(">Q")


class Delivery:
    __slots__ = ("channel", "consumer_tag", "delivery_tag", "redelivered", "exchange",
                 "routing_key", "properties", "body", "size", "chunks")

    def __init__(self, channel: int, payload: bytes):
        self.channel = channel
        pos = 4
        n = payload[pos]
        self.consumer_tag = payload[pos + 1:pos + 1 + n].decode()
        pos += 1 + n
        self.delivery_tag = _U64.unpack_from(payload, pos)[0]
        self.redelivered = bool(payload[pos + 8] & 1)
        pos += 9
        n = payload[pos]
        self.exchange = payload[pos + 1:pos + 1 + n].decode()
        pos += 1 + n
        n = payload[pos]
        self.routing_key = payload[pos + 1:pos + 1 + n].decode()
        self.properties = b""           # raw: flags and values (amqpbroker/protocol/properties)
        self.body = b""
        self.size = -1                  # from the content header
        self.chunks: list = []


class DeliveryReader:
    """The AMQP frames from the broker, split: ``feed`` gives, in the order they came, the
    bytes of whole frames that are not a tapped channel's delivery (for pika) and each
    tapped delivery once its last frame is in. No I/O."""

    def __init__(self):
        self.taps: set[int] = set()
        self.buf = bytearray()
        self.open: dict = {}            # channel -> the Delivery whose content is coming

    def feed(self, data: bytes) -> list:
        buf = self.buf
        buf += data
        pos, start, n = 0, 0, len(buf)     # buf[start:pos]: frames for pika, not yet given
        taps, open_ = self.taps, self.open
        out = []
        while n - pos >= 7:
            kind, channel, size = FRAME_HEAD.unpack_from(buf, pos)
            end = pos + 8 + size
            if end > n:
                break
            if channel in taps and (channel in open_ or (
                    kind == METHOD and buf[pos + 7:pos + 11] == _DELIVER)):
                if pos > start:
                    out.append(bytes(buf[start:pos]))
                payload = bytes(buf[pos + 7:end - 1])
                d = open_.get(channel)
                if d is None:
                    open_[channel] = Delivery(channel, payload)
                elif kind == HEADER:
                    d.size = _U64.unpack_from(payload, 4)[0]
                    d.properties = payload[12:]
                    if d.size == 0:
                        del open_[channel]
                        out.append(d)
                else:                                   # a body frame
                    d.chunks.append(payload)
                    d.size -= len(payload)
                    if d.size <= 0:
                        d.body = d.chunks[0] if len(d.chunks) == 1 else b"".join(d.chunks)
                        d.chunks = []
                        del open_[channel]
                        out.append(d)
                start = end
            pos = end
        if pos > start:
            out.append(bytes(buf[start:pos]))
        del buf[:pos]
        return out


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
