"""AMQP 1.0 on the wire (OASIS AMQP 1.0, part 2: transport; part 5: SASL): the protocol
headers, frames, and the performatives as named fields, no I/O. Values are the tagged pairs of
``stream_protocol/amqp10.py`` (``("uint", 7)``, ``("symbol", "amqp:not-found")``...), which
decodes and encodes them.

A connection starts with an 8-byte header: ``AMQP 3 1 0 0`` for a SASL layer, then (after
the SASL outcome) ``AMQP 0 1 0 0`` for AMQP itself. Then frames::

    size u32 (the whole frame), doff u8 (header size in 4-byte words, >= 2),
    type u8 (0 AMQP, 1 SASL), channel u16, [extended header], body

A body is one performative -- a described list (descriptor ``ulong`` code, or its symbolic
name) whose fields are positional and may be cut short (missing trailing fields are null) --
and, for a transfer, the message bytes after it. A frame with no body is a heartbeat.
"""
from __future__ import annotations

import struct

from ..stream_protocol import amqp10 as types
from ..stream_protocol.amqp10 import NULL, NotAmqp10

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
AMQP, SASL = 0, 1
MIN_MAX_FRAME_SIZE = 512                # part 2.7.1: the least max-frame-size allowed

_HEAD = struct.Struct(">IBBH")


def is_amqp10(received: bytes) -> bool:
    """``received`` (a connection's first bytes, up to the 8 of a header, at least the 5
    that tell) starts an AMQP 1.0 header, SASL's or AMQP's."""
    return len(received) >= 5 and any(h.startswith(received[:8]) or received.startswith(h)
                                      for h in (SASL_HEADER, AMQP_HEADER))

# performative -> (descriptor code, field names in order)
PERFORMATIVES = {
    "open": (0x10, ("container_id", "hostname", "max_frame_size", "channel_max",
                    "idle_time_out", "outgoing_locales", "incoming_locales",
                    "offered_capabilities", "desired_capabilities", "properties")),
    "begin": (0x11, ("remote_channel", "next_outgoing_id", "incoming_window",
                     "outgoing_window", "handle_max", "offered_capabilities",
                     "desired_capabilities", "properties")),
    "attach": (0x12, ("name", "handle", "role", "snd_settle_mode", "rcv_settle_mode",
                      "source", "target", "unsettled", "incomplete_unsettled",
                      "initial_delivery_count", "max_message_size", "offered_capabilities",
                      "desired_capabilities", "properties")),
    "flow": (0x13, ("next_incoming_id", "incoming_window", "next_outgoing_id",
                    "outgoing_window", "handle", "delivery_count", "link_credit", "available",
                    "drain", "echo", "properties")),
    "transfer": (0x14, ("handle", "delivery_id", "delivery_tag", "message_format", "settled",
                        "more", "rcv_settle_mode", "state", "resume", "aborted", "batchable")),
    "disposition": (0x15, ("role", "first", "last", "settled", "state", "batchable")),
    "detach": (0x16, ("handle", "closed", "error")),
    "end": (0x17, ("error",)),
    "close": (0x18, ("error",)),
    "sasl_mechanisms": (0x40, ("sasl_server_mechanisms",)),
    "sasl_init": (0x41, ("mechanism", "initial_response", "hostname")),
    "sasl_challenge": (0x42, ("challenge",)),
    "sasl_response": (0x43, ("response",)),
    "sasl_outcome": (0x44, ("code", "additional_data")),
}
_BY_CODE = {code: (name, fields) for name, (code, fields) in PERFORMATIVES.items()}
_BY_SYMBOL = {f"amqp:{name.replace('_', '-')}:list": code
              for name, (code, _) in PERFORMATIVES.items()}

# composite types inside performatives: descriptor code -> (name, field names)
COMPOSITES = {
    0x1d: ("error", ("condition", "description", "info")),
    0x23: ("received", ("section_number", "section_offset")),
    0x24: ("accepted", ()),
    0x25: ("rejected", ("error",)),
    0x26: ("released", ()),
    0x27: ("modified", ("delivery_failed", "undeliverable_here", "message_annotations")),
    0x28: ("source", ("address", "durable", "expiry_policy", "timeout", "dynamic",
                      "dynamic_node_properties", "distribution_mode", "filter",
                      "default_outcome", "outcomes", "capabilities")),
    0x29: ("target", ("address", "durable", "expiry_policy", "timeout", "dynamic",
                      "dynamic_node_properties", "capabilities")),
}
_COMPOSITE_CODES = {name: code for code, (name, _) in COMPOSITES.items()}
_COMPOSITE_SYMBOLS = {"amqp:error:list": 0x1d, "amqp:received:list": 0x23,
                      "amqp:accepted:list": 0x24, "amqp:rejected:list": 0x25,
                      "amqp:released:list": 0x26, "amqp:modified:list": 0x27,
                      "amqp:source:list": 0x28, "amqp:target:list": 0x29}

# sasl-outcome codes
SASL_OK, SASL_AUTH, SASL_SYS = 0, 1, 2


class FrameError(Exception):
    """Bytes that are not a frame this side can take: the connection is closed with
    ``condition`` (an AMQP 1.0 error symbol) and this text."""

    def __init__(self, text: str, condition: str = "amqp:decode-error"):
        super().__init__(text)
        self.condition = condition


class Frame:
    """One frame: its type, channel, performative name and fields (a dict of the tagged
    values, missing ones null), and the payload after it (a transfer's message bytes)."""

    __slots__ = ("type", "channel", "name", "fields", "payload")

    def __init__(self, type_: int, channel: int, name: str | None, fields: dict,
                 payload: bytes = b""):
        self.type = type_
        self.channel = channel
        self.name = name                # None: an empty frame (a heartbeat)
        self.fields = fields
        self.payload = payload

    def __getitem__(self, field: str):
        """The field's Python value (None for null)."""
        return self.fields[field][1]

    def __repr__(self) -> str:
        return f"Frame({self.name}, channel={self.channel})"


class Splitter:
    """Incremental: ``feed`` bytes, get the frames they complete. ``max_frame_size`` is what
    this side announced; a bigger frame is refused."""

    def __init__(self, max_frame_size: int):
        self.buf = bytearray()
        self.max_frame_size = max_frame_size

    def feed(self, data: bytes, until: str | None = None) -> list[Frame]:
        """The frames ``data`` completes; with ``until``, none after a frame of that
        performative (what follows it is not frames yet: the AMQP header after SASL's
        ``sasl_init``), its bytes left in ``buf``."""
        buf = self.buf
        buf += data
        out = []
        pos, n = 0, len(buf)
        while n - pos >= 8 and not (until and out and out[-1].name == until):
            size, doff, type_, channel = _HEAD.unpack_from(buf, pos)
            if size > self.max_frame_size:
                raise FrameError(f"frame of {size} bytes, over the max-frame-size of "
                                 f"{self.max_frame_size}", "amqp:connection:framing-error")
            if size < 8 or doff < 2 or doff * 4 > size:
                raise FrameError(f"malformed frame header (size {size}, doff {doff})",
                                 "amqp:connection:framing-error")
            if n - pos < size:
                break
            body = bytes(buf[pos + doff * 4:pos + size])
            out.append(decode(type_, channel, body))
            pos += size
        if pos:
            del buf[:pos]
        return out


def decode(type_: int, channel: int, body: bytes) -> Frame:
    """A frame's body: its performative and the payload after it."""
    if type_ not in (AMQP, SASL):
        raise FrameError(f"frame type {type_}", "amqp:connection:framing-error")
    if not body:
        return Frame(type_, channel, None, {})
    try:
        value, end = types._value(body, 0, len(body))
    except (NotAmqp10, RecursionError) as exc:
        raise FrameError(f"cannot decode a performative: {exc}") from None
    code = _described_code(value, _BY_SYMBOL)
    if code not in _BY_CODE or value[1][1][0] != "list":
        raise FrameError(f"not a performative: {value[0]}", "amqp:not-implemented")
    name, names = _BY_CODE[code]
    if (type_ == SASL) != name.startswith("sasl_"):
        raise FrameError(f"{name} in a frame of type {type_}", "amqp:connection:framing-error")
    return Frame(type_, channel, name, _fields(value[1][1][1], names), body[end:])


def _described_code(value: tuple, symbols: dict) -> int | None:
    if value[0] != "described":
        return None
    kind, v = value[1][0]
    if kind == "ulong":
        return v
    if kind == "symbol":
        return symbols.get(v)
    return None


def _fields(items: list, names: tuple) -> dict:
    fields = dict(zip(names, items))
    for name in names[len(items):]:
        fields[name] = NULL
    return fields


def composite(value: tuple) -> tuple[str, dict] | None:
    """A described composite (a source, target, error or delivery state) as (name, fields);
    None for null or anything else."""
    code = _described_code(value, _COMPOSITE_SYMBOLS)
    if code not in COMPOSITES:
        return None
    inner = value[1][1]
    name, names = COMPOSITES[code]
    return name, _fields(inner[1] if inner[0] == "list" else [], names)


# ------------------------------------------------------------------ encoding
def _described(code: int, names: tuple, fields: dict) -> tuple:
    """A described list of ``fields`` (tagged values by name), trailing nulls left out;
    booleans in their one-byte form, as every AMQP 1.0 peer writes them (RabbitMQ 3.10's
    plugin reads a two-byte ``0x56`` boolean in a performative as no boolean at all)."""
    items = [("bool", v[1]) if v[0] == "boolean" else v
             for v in (fields.get(name, NULL) for name in names)]
    while items and items[-1] == NULL:
        items.pop()
    return ("described", (("ulong", code), ("list", items)))


def make(name: str, **fields) -> tuple:
    """A composite as a tagged value: ``make("error", condition=("symbol", "amqp:..."))``."""
    code = _COMPOSITE_CODES[name]
    return _described(code, COMPOSITES[code][1], fields)


def error(condition: str, description: str = "") -> tuple:
    return make("error", condition=("symbol", condition),
                description=("utf8", description) if description else NULL)


def frame(performative: str, channel: int = 0, payload: bytes = b"", **fields) -> bytes:
    """The bytes of a frame carrying ``performative`` with ``fields`` (tagged values)."""
    code, names = PERFORMATIVES[performative]
    body = types._encode(_described(code, names, fields)) + payload
    return _HEAD.pack(8 + len(body), 2, SASL if performative.startswith("sasl_") else AMQP,
                      channel) + body


def transfer_head(channel: int, handle: int, delivery_id: int, tag: bytes, settled: bool,
                  more: bool) -> bytes:
    """A transfer performative's bytes (for ``frame``'s fast path: the payload follows)."""
    code, names = PERFORMATIVES["transfer"]
    return types._encode(_described(code, names, {
        "handle": ("uint", handle), "delivery_id": ("uint", delivery_id),
        "delivery_tag": ("binary", tag), "message_format": ("uint", 0),
        "settled": ("boolean", settled), "more": ("boolean", more)}))


def with_head(channel: int, body: bytes) -> bytes:
    """An AMQP frame around ``body`` (a performative's bytes and its payload)."""
    return _HEAD.pack(8 + len(body), 2, AMQP, channel) + body


HEARTBEAT = _HEAD.pack(8, 2, AMQP, 0)
