"""Frame builders (pamqp, the generic codec) and a connection driven to OPEN, fed two ways."""
from __future__ import annotations

import pytest
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker.protocol import events as ev
from amqpbroker.protocol.connection import Connection
from amqpbroker.protocol.constants import PROTOCOL_HEADER
from amqpbroker.testing.feeder import SPLITTERS, feed, frames, whole

SERVER_PROPERTIES = {"product": "amqpbroker-test", "capabilities": {"basic.nack": True}}
FRAME_MAX = 4096


def method(channel: int, m) -> bytes:
    return pframe.marshal(m, channel)


def header(channel: int, body_size: int, props: C.Basic.Properties | None = None) -> bytes:
    return pframe.marshal(pheader.ContentHeader(0, body_size, props or C.Basic.Properties()),
                          channel)


def body(channel: int, data: bytes) -> bytes:
    return pframe.marshal(pbody.ContentBody(data), channel)


def publish(channel: int, payload: bytes, *, exchange: str = "", routing_key: str = "rk",
            props: C.Basic.Properties | None = None, chunk: int | None = None) -> bytes:
    """basic.publish + header + body frames of at most ``chunk`` payload bytes each."""
    out = method(channel, C.Basic.Publish(exchange=exchange, routing_key=routing_key))
    out += header(channel, len(payload), props)
    chunk = chunk or FRAME_MAX - 8
    for i in range(0, len(payload), chunk):
        out += body(channel, payload[i:i + chunk])
    return out


def split_frames(data: bytes) -> list:
    """A byte string of whole frames as a list of one bytes object per frame."""
    out, pos = [], 0
    while pos < len(data):
        n, _, _ = pframe.unmarshal(data[pos:])
        out.append(data[pos:pos + n])
        pos += n
    return out


START_OK = method(0, C.Connection.StartOk(client_properties={"product": "test"},
                                          mechanism="PLAIN", response="\0guest\0guest"))
TUNE_OK = method(0, C.Connection.TuneOk(channel_max=16, frame_max=FRAME_MAX, heartbeat=30))
OPEN = method(0, C.Connection.Open(virtual_host="/"))


def new_connection(**kw) -> Connection:
    kw.setdefault("frame_max", 131072)
    return Connection(SERVER_PROPERTIES, **kw)


def handshake(conn: Connection, split=whole) -> list:
    """Drive ``conn`` from the protocol header to OPEN, as the session would; returns events."""
    events = feed(conn, PROTOCOL_HEADER, split)
    events += feed(conn, START_OK, split)
    conn.send_tune()
    events += feed(conn, TUNE_OK, split)
    events += feed(conn, OPEN, split)
    conn.send_open_ok()
    return events


def open_channel(conn: Connection, channel: int = 1, split=whole) -> None:
    assert feed(conn, method(channel, C.Channel.Open()), split) == [ev.ChannelOpened(channel)]
    conn.send_channel_open_ok(channel)          # the server accepts it
    assert frames(conn.data_to_send()) != []


@pytest.fixture(params=["whole", "bytewise"])
def split(request):
    """Every input is fed whole and one byte at a time; both must give the same events."""
    return SPLITTERS[request.param]


@pytest.fixture
def conn(split):
    """A connection past the handshake (frame_max 4096) with channel 1 open, output drained."""
    c = new_connection()
    handshake(c, split)
    open_channel(c, 1, split)
    c.data_to_send()
    return c
