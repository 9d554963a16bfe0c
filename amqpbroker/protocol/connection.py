"""The AMQP 0-9-1 server connection as a pure state machine: bytes in, events out.

Theory of operation (h11-style, no I/O anywhere under ``amqpbroker/protocol``):

* ``receive_data(bytes)`` only buffers; a shell that reads into the buffer itself (asyncio's
  ``BufferedProtocol``) uses ``get_buffer(n)`` / ``buffer_updated(n)`` instead, so a body is
  copied into the buffer by the read, then once into the ``bytes`` a Publish carries.
  ``next_event()`` returns the next complete event or ``NEED_DATA``; an incomplete frame is
  never an error. Protocol violations raise an
  ``AMQPError`` (``errors.py``): a ``ChannelError`` carries ``.channel``; the server's one
  error boundary answers it with ``close_channel`` / ``close_connection``.
* Frames are checked early and cheaply: the 7-byte header's size against frame_max (plus the
  8 bytes of framing RabbitMQ tolerates) before the payload is read (501), the 0xCE end byte
  (501), the channel against channel_max (530) and the open-channel set (504).
* Per channel, content is assembled as RabbitMQ's ``rabbit_command_assembler`` does:
  basic.publish, then one content header, then body frames until body-size bytes arrived.
  Anything else in between is 505 UNEXPECTED_FRAME; a body overrun is 501.
* Everything the server sends is queued in ``data_to_send()`` / ``take_output()``; the shell
  writes it once per read, so many confirms and deliveries go out in one (writev) syscall.
* While ``hold_content`` is set (a resource alarm), ``next_event()`` returns ``PAUSED`` at the
  next content frame, or basic.publish, before reading it (the frame may still be arriving):
  RabbitMQ's reader blocks a connection at the method that starts a publish, so a publisher,
  even one half-way through a body, reads no more content while the alarm lasts.
  ``partial_content_bytes`` is what the channels hold of bodies not yet complete.
* After the server sends ``channel.close`` the channel's frames are dropped until
  ``channel.close-ok``; after ``connection.close``, all frames until ``connection.close-ok``.

The hot path (publish, header, body, ack/nack/reject) is decoded by hand (``fastpath.py``);
other methods go through pamqp.
"""
from __future__ import annotations

import logging

from pamqp import commands, frame as pframe

from .. import errors
from . import events as ev
from . import fastpath as fp
from . import properties
from . import states as st
from .fastpath import whole_publish
from .constants import (ACK, DEFAULT_CHANNEL_MAX, DEFAULT_FRAME_MAX, DEFAULT_HEARTBEAT,
                        DEFAULT_MAX_MESSAGE_SIZE, FRAME_BODY, FRAME_END, FRAME_HEADER,
                        FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE, MODIFY, NACK,
                        PROTOCOL_HEADER, PUBLISH, REJECT)

log = logging.getLogger("amqpbroker.protocol")

_METHODS = commands.INDEX_MAPPING
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
PUBLISH_ID = b"\x00\x3c\x00\x28"          # class 60, method 40
# the input buffer: room offered per read, doubled while reads fill it, halved while they
# use under a quarter (a publisher of 64 KiB bodies reads several per syscall, an idle
# connection keeps a small buffer)
READ_MIN = 16 * 1024
READ_MAX = 256 * 1024
_CLOSE_IDS = (b"\x00\x0a\x00\x32", b"\x00\x0a\x00\x33")     # connection.close, close-ok

# RabbitMQ's rabbit_command_assembler words what a channel expected next, and its reader a
# frame it cannot use; users search for these texts
EXPECTED_METHOD = "expected method frame, got non method frame instead"
EXPECTED_HEADER = "expected content header for class 60, got non content header frame instead"
EXPECTED_BODY = "expected content body, got non content body frame instead"


def _octets(payload: bytes) -> str:
    """A frame's payload as RabbitMQ's reader shows it: up to 16 bytes, Erlang-printed."""
    if len(payload) <= 16:
        return f"all octets = {errors.erl_binary(payload)}"
    return f"first 16 octets = {errors.erl_binary(payload[:16])}"


def _negotiated(field: str, minimum: int, server: int, client: int) -> int:
    """A tune-ok value, checked as RabbitMQ's reader does: not below the minimum, and when the
    server has a limit, neither above it nor 0 ("no limit")."""
    shown = f"{client} (no limit)" if field == "channel_max" and client == 0 else f"{client}"
    if client and client < minimum:
        raise errors.NotAllowed(f"negotiated {field} = {shown} is lower than the minimum "
                                f"allowed value ({minimum})", 10, 30)
    if server and (client == 0 or client > server):
        raise errors.NotAllowed(f"negotiated {field} = {shown} is higher than the maximum "
                                f"allowed value ({server})", 10, 30)
    return client


class ChannelState:
    """Per-channel assembly state: what frame the channel expects next."""
    __slots__ = ("number", "state", "publish", "props", "scan", "body_size", "parts", "received")

    def __init__(self, number: int):
        self.number = number
        self.state = st.CHANNEL_OPEN
        self.publish = None          # (exchange, routing_key, mandatory, immediate) awaiting content
        self.props = None            # raw property bytes once the header arrived
        self.scan = None
        self.body_size = 0
        self.parts: list = []
        self.received = 0

    def reset_content(self) -> None:
        self.publish = self.props = self.scan = None
        self.parts = []
        self.body_size = self.received = 0


def _channel_error(cls, text: str, channel: int, class_id: int = 0, method_id: int = 0):
    err = cls(text, class_id, method_id)
    err.channel = channel
    return err


class Connection:
    def __init__(self, server_properties: dict, *, frame_max: int = DEFAULT_FRAME_MAX,
                 channel_max: int = DEFAULT_CHANNEL_MAX, heartbeat: int = DEFAULT_HEARTBEAT,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 mechanisms: str = "PLAIN AMQPLAIN"):
        self.server_properties = server_properties
        self.mechanisms = mechanisms
        self.state = st.AWAIT_HEADER
        self.server_frame_max = frame_max
        self.server_channel_max = channel_max
        self.server_heartbeat = heartbeat
        self.frame_max = frame_max              # in force (negotiated after tune-ok)
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.channels: dict[int, ChannelState] = {}
        self.modify_allowed = False     # basic.modify: the AMQP 1.0 adapter's (constants.py)
        self._buf = bytearray(READ_MIN)     # bytes [_pos, _end) are unparsed input
        self._pos = 0
        self._end = 0
        self._read_size = READ_MIN
        # queued output (``take_output``); a session looks whether there is any
        self.output: list = []
        self.hold_content = False

    @property
    def partial_content_bytes(self) -> int:
        """Bytes of bodies being assembled (memory a client holds in us)."""
        return sum(ch.received for ch in self.channels.values())

    # ------------------------------------------------------------------ input
    @property
    def buffered_bytes(self) -> int:
        """Input received and not parsed yet."""
        return self._end - self._pos

    def receive_data(self, data: bytes) -> None:
        n = len(data)
        if n:
            room = self._room(n)
            room[:n] = data
            room.release()
            self._end += n

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next read goes (``BufferedProtocol.get_buffer``): the free end of the
        input buffer, at least the adaptive read size; then call ``buffer_updated``."""
        return self._room(max(sizehint, self._read_size))

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were read into the view ``get_buffer`` returned."""
        if self._end + nbytes == len(self._buf):
            self._read_size = min(self._read_size * 2, READ_MAX)     # a full read: more
        elif nbytes < self._read_size // 4 and self._read_size > READ_MIN:
            self._read_size = max(self._read_size // 2, READ_MIN)
        self._end += nbytes

    def _room(self, want: int) -> memoryview:
        """A view of at least ``want`` free bytes after the unparsed input: compacted to the
        front, or moved to a new buffer (never resized in place: a view may be alive)."""
        buf, pos, end = self._buf, self._pos, self._end
        if pos == end:
            pos = end = self._pos = self._end = 0
            if len(buf) > 2 * max(want, self._read_size):      # shrink after a burst
                buf = self._buf = bytearray(max(want, self._read_size))
        if len(buf) - end < want:
            kept = end - pos
            if kept + want > len(buf):          # room for twice that: compact next time
                new = bytearray(kept + 2 * want)
                new[:kept] = memoryview(buf)[pos:end]
                buf = self._buf = new
            else:
                view = memoryview(buf)
                view[:kept] = view[pos:end]
                view.release()
            self._pos, self._end = 0, kept
            end = kept
        return memoryview(buf)[end:] if end else memoryview(buf)

    def next_event(self):
        buf = self._buf
        limit = self._end
        while True:
            pos = self._pos
            if pos == limit:            # all parsed (each read ends here): nothing to look at
                return ev.NEED_DATA
            if self.state == st.OPEN and not self.hold_content:
                got = whole_publish(buf, pos, self.frame_max, self.max_message_size, limit)
                if got is not None:
                    event = self._whole_publish(got)
                    if event is not None:
                        return event
            avail = limit - pos
            if self.state == st.AWAIT_HEADER:
                if avail < 8:
                    if avail and not PROTOCOL_HEADER.startswith(bytes(buf[pos:pos + avail])):
                        return self._bad_header(bytes(buf[pos:limit]))
                    return ev.NEED_DATA
                header = bytes(buf[pos:pos + 8])
                self._pos = pos + 8
                if header != PROTOCOL_HEADER:
                    return self._bad_header(header, bytes(buf[pos + 8:limit]))
                self.state = st.transition(self.state, "header")
                self.send_method(0, commands.Connection.Start(
                    version_major=0, version_minor=9, server_properties=self.server_properties,
                    mechanisms=self.mechanisms, locales="en_US"))
                continue
            if self.state == st.CLOSED:
                self._pos = limit
                return ev.NEED_DATA
            if avail < 7:
                return ev.NEED_DATA
            ftype, channel, size = fp.FRAME_HEAD.unpack_from(buf, pos)
            if self.hold_content and self.state == st.OPEN:
                if ftype == FRAME_METHOD and size >= 4 and avail < 11:
                    return ev.NEED_DATA          # its method id decides
                if self._is_content(buf, pos, ftype):
                    return ev.PAUSED
            if size > self.frame_max:
                # RabbitMQ lets a frame exceed frame_max by its 8 bytes of framing ("quite a
                # few clients get it wrong"), and words the error as its reader does
                self._pos = limit
                raise errors.FrameError(f"type {ftype}, all octets = <<>>: {{frame_too_large,"
                                        f"{size},{self.frame_max - 8}}}")
            end = pos + 7 + size
            if limit <= end:
                return ev.NEED_DATA
            if buf[end] != FRAME_END:
                self._pos = limit
                raise errors.FrameError(f"type {ftype}, {_octets(bytes(buf[pos + 7:end]))}: "
                                        f"{{invalid_frame_end_marker,{buf[end]}}}")
            payload = bytes(memoryview(buf)[pos + 7:end])     # one copy, not two
            self._pos = end + 1
            event = self._frame(ftype, channel, payload)
            if event is not None:
                return event

    @staticmethod
    def _is_content(buf, pos: int, ftype: int) -> bool:
        """The frame at ``pos`` is content or the basic.publish that starts it."""
        if ftype == FRAME_HEADER or ftype == FRAME_BODY:
            return True
        return ftype == FRAME_METHOD and buf[pos + 7:pos + 11] == PUBLISH_ID

    def _whole_publish(self, got):
        """Fast path: ``fastpath.whole_publish`` found basic.publish, its content header and
        its single body frame whole in the buffer. On an open channel in the usual state,
        consume them and return the Publish event; else return None (nothing consumed), and
        the general frame-by-frame path handles it, errors included."""
        channel, exchange, routing_key, mandatory, immediate, props, body, next_pos = got
        ch = self.channels.get(channel)
        if ch is None or ch.publish is not None or ch.state != st.CHANNEL_OPEN:
            return None
        try:
            scan = properties.scan_cached(props)
        except ValueError:
            return None
        self._pos = next_pos
        return ev.Publish(channel, exchange, routing_key, mandatory, immediate, props, body, scan)

    def _bad_header(self, received: bytes, rest: bytes = b""):
        self.output.append(PROTOCOL_HEADER)
        self.state = st.CLOSED
        self._pos = self._end
        return ev.BadProtocolHeader(received, rest)

    def _frame(self, ftype: int, channel: int, payload: bytes):
        if ftype == FRAME_METHOD:
            if len(payload) < 4:
                raise errors.FrameError(f"method frame on channel {channel} too short")
            if channel == 0:
                return self._connection_method(payload)
            return self._channel_method(channel, payload)
        if ftype == FRAME_HEARTBEAT:
            if channel != 0:
                raise errors.UnexpectedFrame(f"type {ftype}, {_octets(payload)}")
            return None
        if ftype == FRAME_HEADER or ftype == FRAME_BODY:
            if self.state != st.OPEN:
                if self.state == st.CLOSING:
                    return None
                raise errors.UnexpectedFrame(f"content frame in connection state {self.state}")
            ch = self._channel(channel)
            if ch is None:
                return None
            if ftype == FRAME_HEADER:
                return self._content_header(ch, payload)
            return self._content_body(ch, payload)
        raise errors.FrameError(f"type {ftype}, {_octets(payload)}: unknown_frame")

    def _channel(self, number: int):
        """The open channel a content frame is for; None if its frames are being dropped."""
        ch = self.channels.get(number)
        if ch is None:
            raise errors.UnexpectedFrame(EXPECTED_METHOD)
        if ch.state == st.CHANNEL_CLOSING:
            return None
        return ch

    def _decode(self, payload: bytes, channel: int):
        class_id, method_id = fp.METHOD_ID.unpack_from(payload, 0)
        cls = _METHODS.get((class_id << 16) | method_id)
        if cls is None:
            raise errors.NotImplemented_(f"unknown method class {class_id} method {method_id}"
                                         f" on channel {channel}", class_id, method_id)
        method = cls()
        try:
            method.unmarshal(payload[4:])
        except Exception as exc:   # pamqp raises struct.error, ValueError, IndexError, ...
            raise errors.FrameError(f"cannot decode {method.name} on channel {channel}: {exc}",
                                    class_id, method_id) from None
        return method

    def _connection_method(self, payload: bytes):
        if self.state == st.CLOSING and bytes(payload[:4]) not in _CLOSE_IDS:
            return None                       # dropped before decoding: even unknown methods
        method = self._decode(payload, 0)
        name = method.name
        if self.state == st.OPEN:
            if name not in st.CHANNEL_ZERO_METHODS:
                class_id, method_id = fp.METHOD_ID.unpack_from(payload, 0)
                raise errors.ChannelErrorHard("unexpected method in connection state running",
                                              class_id, method_id)
            if name == "Connection.UpdateSecret":
                # RabbitMQ asks its auth backends (the session: an OAuth 2 token is checked;
                # the internal backend's state cannot expire, so it takes any new secret)
                secret = method.new_secret
                if isinstance(secret, str):
                    secret = secret.encode("utf-8", "surrogateescape")
                return ev.UpdateSecret(secret or b"", method.reason or "")
        self.state = st.transition(self.state, name)
        if name == "Connection.StartOk":
            response = method.response
            if isinstance(response, str):
                response = response.encode("utf-8", "surrogateescape")
            return ev.StartOk(method.client_properties or {}, method.mechanism, response,
                              method.locale)
        if name == "Connection.TuneOk":
            return self._tune_ok(method)
        if name == "Connection.Open":
            return ev.OpenVhost(method.virtual_host)
        if name == "Connection.Close":
            self.send_method(0, commands.Connection.CloseOk())
            return ev.ConnectionClosedByPeer(method.reply_code, method.reply_text)
        return ev.ConnectionCloseOk()         # Connection.CloseOk

    def _tune_ok(self, method):
        frame_max = _negotiated("frame_max", FRAME_MIN_SIZE, self.server_frame_max,
                                method.frame_max)
        channel_max = _negotiated("channel_max", 1, self.server_channel_max, method.channel_max)
        self.frame_max = frame_max or self.server_frame_max
        self.channel_max = channel_max or self.server_channel_max
        self.heartbeat = method.heartbeat
        return ev.TuneOk(self.channel_max, self.frame_max, self.heartbeat)

    def _channel_method(self, channel: int, payload: bytes):
        if self.state != st.OPEN:
            if self.state == st.CLOSING:
                return None
            raise errors.CommandInvalid(f"channel {channel} method before connection.open-ok")
        class_id, method_id = fp.METHOD_ID.unpack_from(payload, 0)
        ch = self.channels.get(channel)
        if ch is None:
            if (class_id, method_id) != (20, 10):
                raise errors.ChannelErrorHard("expected 'channel.open'", class_id, method_id)
            if len(self.channels) >= self.channel_max:
                # RabbitMQ counts open channels; the channel number itself may be larger
                raise errors.NotAllowed(f"number of channels opened ({len(self.channels)}) has "
                                        f"reached the negotiated channel_max "
                                        f"({self.channel_max})", 20, 10)
            self.channels[channel] = ChannelState(channel)
            return ev.ChannelOpened(channel)      # the server answers: send_channel_open_ok
        if ch.state == st.CHANNEL_CLOSING:
            if (class_id, method_id) in ((20, 41), (20, 40)):
                if (class_id, method_id) == (20, 40):
                    self.send_method(channel, commands.Channel.CloseOk())
                del self.channels[channel]
                return ev.ChannelCloseOk(channel)
            return None
        if ch.publish is not None:
            # RabbitMQ names the method whose content was cut short: basic.publish
            raise errors.UnexpectedFrame(
                EXPECTED_BODY if ch.props is not None else EXPECTED_HEADER, 60, 40)
        key = (class_id, method_id)
        try:
            if key == PUBLISH:
                ch.publish = fp.parse_publish(payload)
                return None
            if key == ACK:
                tag, bits = fp.parse_tag_bits(payload)
                return ev.Ack(channel, tag, bool(bits & 1))
            if key == NACK:
                tag, bits = fp.parse_tag_bits(payload)
                return ev.Nack(channel, tag, bool(bits & 1), bool(bits & 2))
            if key == REJECT:
                tag, bits = fp.parse_tag_bits(payload)
                return ev.Nack(channel, tag, False, bool(bits & 1))
            if key == MODIFY and self.modify_allowed:
                tag, bits, props = fp.parse_modify(payload)
                return ev.Modify(channel, tag, bool(bits & 1), props)
        except fp.Truncated as exc:
            raise errors.FrameError(f"cannot decode method {exc} on channel {channel}",
                                    class_id, method_id) from None
        method = self._decode(payload, channel)
        name = method.name
        if name == "Channel.Open":
            raise errors.ChannelErrorHard("second 'channel.open' seen",
                                          20, 10)
        if name == "Channel.Close":
            del self.channels[channel]
            self.send_method(channel, commands.Channel.CloseOk())
            return ev.ChannelClosedByPeer(channel, method.reply_code, method.reply_text)
        if name == "Channel.CloseOk":
            return None
        if class_id == 10:
            raise errors.CommandInvalid(f"{name} on channel {channel}", class_id, method_id)
        return ev.Method(channel, method)

    def _content_header(self, ch: ChannelState, payload: bytes):
        if ch.publish is None:
            raise errors.UnexpectedFrame(EXPECTED_METHOD)
        if ch.props is not None:
            raise errors.UnexpectedFrame(EXPECTED_BODY, 60, 40)
        try:
            class_id, body_size, props = fp.parse_content_header(payload)
            scan = properties.scan(props)
        except ValueError as exc:
            raise errors.FrameError(f"cannot decode content header on channel {ch.number}: "
                                    f"{exc}", 60, 40) from None
        if class_id != 60:
            raise errors.UnexpectedFrame(f"expected content header for class 60, got one for "
                                         f"class {class_id} instead", 60, 40)
        if body_size > self.max_message_size:
            ch.reset_content()
            raise _channel_error(errors.PreconditionFailed,
                                 f"message size {body_size} is larger than configured max "
                                 f"size {self.max_message_size}", ch.number, 60, 40)
        ch.props, ch.scan, ch.body_size = props, scan, body_size
        if body_size == 0:
            return self._publish_done(ch, b"")
        return None

    def _content_body(self, ch: ChannelState, payload: bytes):
        if ch.publish is None:
            raise errors.UnexpectedFrame(EXPECTED_METHOD)
        if ch.props is None:
            raise errors.UnexpectedFrame(EXPECTED_HEADER, 60, 40)
        ch.received += len(payload)
        if ch.received > ch.body_size:
            raise errors.FrameError(f"content body on channel {ch.number} overruns the "
                                    f"declared body size {ch.body_size}", 60, 40)
        if ch.received == ch.body_size:
            if ch.parts:
                ch.parts.append(payload)
                body = b"".join(ch.parts)
            else:
                body = payload
            return self._publish_done(ch, body)
        ch.parts.append(payload)
        return None

    def _publish_done(self, ch: ChannelState, body: bytes):
        exchange, routing_key, mandatory, immediate = ch.publish
        event = ev.Publish(ch.number, exchange, routing_key, mandatory, immediate, ch.props, body,
                           ch.scan)
        ch.reset_content()
        return event

    # ----------------------------------------------------------------- output
    def data_to_send(self) -> bytes:
        if not self.output:
            return b""
        out = b"".join(self.output)
        self.output.clear()
        return out

    def take_output(self) -> list:
        """What ``data_to_send()`` would join, as the list of parts itself (bytes and
        memoryviews), for ``transport.writelines``: bodies go to the socket uncopied."""
        out = self.output
        if out:
            self.output = []
        return out

    def write(self, frames) -> None:
        """Queue pre-built frames (bytes, or a list of bytes from ``fastpath``)."""
        if isinstance(frames, list):
            self.output += frames
        else:
            self.output.append(frames)

    def send_method(self, channel: int, method) -> None:
        self.output.append(pframe.marshal(method, channel))

    def send_tune(self) -> None:
        self.state = st.transition(self.state, "send:connection.tune")
        self.send_method(0, commands.Connection.Tune(
            channel_max=self.server_channel_max, frame_max=self.server_frame_max,
            heartbeat=self.server_heartbeat))

    def send_update_secret_ok(self) -> None:
        self.send_method(0, commands.Connection.UpdateSecretOk())

    def send_open_ok(self) -> None:
        self.state = st.transition(self.state, "send:connection.open-ok")
        self.send_method(0, commands.Connection.OpenOk())

    def send_channel_open_ok(self, channel: int) -> None:
        """Accept a channel the peer opened (``ChannelOpened``); the server may refuse it
        instead by closing the connection (a limit on channels)."""
        self.send_method(channel, commands.Channel.OpenOk())

    def send_heartbeat(self) -> None:
        self.output.append(HEARTBEAT_FRAME)

    def close_channel(self, channel: int, error: errors.AMQPError) -> None:
        ch = self.channels.get(channel)
        if ch is None or ch.state == st.CHANNEL_CLOSING:
            return
        ch.state = st.CHANNEL_CLOSING
        ch.reset_content()
        self.send_method(channel, commands.Channel.Close(
            reply_code=error.reply_code, reply_text=error.reply_text,
            class_id=error.class_id, method_id=error.method_id))

    def close_connection(self, error: errors.AMQPError) -> None:
        if self.state in (st.CLOSING, st.CLOSED, st.AWAIT_HEADER):
            return
        self.state = st.transition(self.state, "send:connection.close")
        self.send_method(0, commands.Connection.Close(
            reply_code=error.reply_code, reply_text=error.reply_text,
            class_id=error.class_id, method_id=error.method_id))

    def is_channel_open(self, channel: int) -> bool:
        ch = self.channels.get(channel)
        return ch is not None and ch.state == st.CHANNEL_OPEN
