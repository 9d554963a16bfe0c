"""Feed bytes to a sans-I/O protocol ``Connection`` in pieces and collect its events.

A parser that works on whole frames but breaks when a frame arrives in two reads is the most
common framing bug; h11's tests catch it by feeding every input whole and one byte at a time.
``feed`` does the feeding; ``byte_chunks`` / ``fixed_chunks`` / ``random_chunks`` say how to
cut. ``frames`` decodes what the connection sends back with pamqp, the generic codec, so tests
assert on the wire bytes and not on our own encoder::

    conn = Connection(props)
    events = feed(conn, PROTOCOL_HEADER, split=byte_chunks)
    [(channel, start)] = frames(conn.data_to_send())

Errors the connection raises propagate out of ``feed`` (wrap it in ``pytest.raises``); the
events pulled before the error are lost with it, so feed the valid prefix first.
"""
from __future__ import annotations

import random
from typing import Callable, Iterable, Iterator

from pamqp import frame as pframe

from ..protocol import events as ev


def whole(data: bytes) -> Iterator[bytes]:
    """The input in one piece."""
    yield bytes(data)


def byte_chunks(data: bytes) -> Iterator[bytes]:
    """The input one byte at a time."""
    for i in range(len(data)):
        yield bytes(data[i:i + 1])


def fixed_chunks(size: int) -> Callable[[bytes], Iterator[bytes]]:
    """A splitter that cuts the input into pieces of ``size`` bytes."""
    def split(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), size):
            yield bytes(data[i:i + size])
    return split


def random_chunks(seed: int, max_size: int = 64) -> Callable[[bytes], Iterator[bytes]]:
    """A splitter that cuts the input at random points (reproducible from ``seed``)."""
    def split(data: bytes) -> Iterator[bytes]:
        rng = random.Random(seed)
        i = 0
        while i < len(data):
            n = rng.randint(1, max_size)
            yield bytes(data[i:i + n])
            i += n
    return split


SPLITTERS = {"whole": whole, "bytewise": byte_chunks}


def drain(conn) -> list:
    """Pull events until ``NEED_DATA``."""
    out = []
    while True:
        event = conn.next_event()
        if event is ev.NEED_DATA:
            return out
        out.append(event)


def feed(conn, data: bytes, split: Callable[[bytes], Iterable[bytes]] = whole) -> list:
    """Give ``data`` to ``conn`` in the pieces ``split`` cuts, draining events after each one.

    Returns all events in order. An ``AMQPError`` from the connection propagates.
    """
    out = []
    for piece in split(data):
        conn.receive_data(piece)
        out += drain(conn)
    return out


def frames(data: bytes) -> list:
    """Decode a byte string of whole frames with pamqp: a list of ``(channel, frame)``.

    Raises ``AssertionError`` if bytes are left over (a frame cut short).
    """
    out = []
    pos = 0
    while pos < len(data):
        consumed, channel, frame = pframe.unmarshal(bytes(data[pos:]))
        assert consumed > 0, f"pamqp consumed nothing at offset {pos}"
        out.append((channel, frame))
        pos += consumed
    return out
