"""STOMP 1.0 / 1.1 / 1.2 frames: the parser and the serializer, no I/O.

A frame is a command line, header lines ``name:value`` and an empty line, then the body up
to a NUL byte; a SEND with ``content-length`` takes exactly that many bytes (NULs included)
before its NUL. Between frames a client may send EOLs (its heart-beats) and NULs; lines may
end in CRLF. Header names and values unescape ``\\n``, ``\\r``, ``\\c`` (colon) and ``\\\\``;
a repeated header keeps its first value. These are RabbitMQ's rules
(``rabbit_stomp_frame.erl``), which apply them whatever version the client speaks.

Frames out: headers escaped the same way, ``content-length`` added when the body is not
empty, and an LF after the NUL (RabbitMQ's ``stomp.trailing_lf``, on by default).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

NUL, LF, CR = 0, 10, 13
_UNESCAPE = {ord("n"): "\n", ord("r"): "\r", ord("c"): ":", ord("\\"): "\\"}
_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"})


class FrameError(Exception):
    """The bytes are not a STOMP frame: the connection cannot go on."""


@dataclass
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)   # first value of each name
    body: bytes = b""

    def get(self, name: str, default=None):
        return self.headers.get(name, default)


def _unescape(raw: bytes, what: str) -> str:
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    text = raw.decode("utf-8", "replace")
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n or ord(text[i + 1]) not in _UNESCAPE:
                raise FrameError(f"bad escape in {what}: {text[i:i + 2]!r}")
            out.append(_UNESCAPE[ord(text[i + 1])])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class Parser:
    """Incremental: ``feed`` bytes as they arrive, get the frames they complete."""

    def __init__(self, max_length: int, every_length: bool = False):
        self.buf = bytearray()
        self.max_length = max_length        # a frame longer than this is refused
        # content-length counts on every frame (a client reading MESSAGEs), not only SEND
        self.every_length = every_length

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        frames, pos = [], 0
        while True:
            frame, pos = self._one(pos)
            if frame is None:
                break
            frames.append(frame)
        if pos:
            del self.buf[:pos]                  # once per feed: a read holds many frames
        if len(self.buf) > self.max_length:
            raise FrameError(f"frame larger than {self.max_length} bytes")
        return frames

    def _one(self, start: int) -> tuple[Frame | None, int]:
        """The frame at ``start`` and where the next begins; (None, where to resume) when
        the buffer does not hold a whole frame yet."""
        buf = self.buf
        n = len(buf)
        while start < n and buf[start] in (NUL, LF, CR):  # heart-beats, NULs between frames
            if buf[start] == CR and (start + 1 >= n or buf[start + 1] != LF):
                if start + 1 >= n:
                    break
                raise FrameError("unexpected chars between frames: CR not followed by LF")
            start += 1
        end = buf.find(b"\n\n", start)
        # a CRLF line end before it: look for the blank line only up to there
        crlf = buf.find(b"\n\r\n", start, n if end == -1 else end + 1)
        if crlf != -1:
            head_end, body_start = crlf, crlf + 3
        elif end != -1:
            head_end, body_start = end, end + 2
        else:
            return None, start
        lines = bytes(buf[start:head_end]).split(b"\n")
        command = lines[0].rstrip(b"\r")
        if b"\r" in command:
            raise FrameError("unexpected chars in command")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line.endswith(b"\r"):
                line = line[:-1]
            if b"\r" in line:
                raise FrameError("unexpected chars in header")
            name, colon, value = line.partition(b":")
            if not colon:
                raise FrameError(f"header without a value: {line[:80]!r}")
            key = _unescape(name, "a header name")
            if key not in headers:                      # the first one counts
                headers[key] = _unescape(value, "a header value")
        cmd = command.decode("utf-8", "replace")
        length = headers.get("content-length") if cmd == "SEND" or self.every_length \
            else None
        if length is not None:
            try:
                size = int(length.strip())
            except ValueError:
                raise FrameError(f"content-length is not a number: {length!r}") from None
            if size < 0:
                raise FrameError(f"content-length is negative: {size}")
            if n < body_start + size + 1:
                if body_start + size + 1 - start > self.max_length:
                    raise FrameError(f"frame larger than {self.max_length} bytes")
                return None, start
            if buf[body_start + size] != NUL:
                raise FrameError("the body is not followed by NUL (content-length)")
            body_end = body_start + size
        else:
            body_end = buf.find(b"\x00", body_start)
            if body_end == -1:
                return None, start
        return Frame(cmd, headers, bytes(buf[body_start:body_end])), body_end + 1


_SPECIAL = re.compile(r"[\\:\n\r]").search


def escape(value: str) -> str:
    return value.translate(_ESCAPE) if _SPECIAL(value) else value


def serialize(command: str, headers, body: bytes = b"") -> bytes:
    """A frame to send: ``headers`` a list of (name, value) pairs, in the order to send."""
    parts = [command, "\n"]
    for name, value in headers:
        if name == "content-length":
            continue
        parts += (escape(name), ":", escape(value), "\n")
    if body:
        parts += ("content-length:", str(len(body)), "\n")
    parts.append("\n")
    return "".join(parts).encode() + body + b"\x00\n"
