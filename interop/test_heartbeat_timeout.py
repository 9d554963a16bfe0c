"""A peer that stops talking is disconnected after about two heartbeat intervals."""
from __future__ import annotations

import time

import pika


def test_silent_peer_is_disconnected(raw):
    p = raw()
    p.handshake(heartbeat=1)
    p.sock.settimeout(15)
    started = time.monotonic()
    frames = 0
    try:
        while True:                    # the server's heartbeats arrive, then the socket closes
            channel, frame = p.recv_frame()
            assert frame.name == "Heartbeat" and channel == 0
            frames += 1
    except EOFError:
        pass
    waited = time.monotonic() - started
    assert frames >= 1
    assert 1.0 <= waited < 10.0


def test_peer_sending_heartbeats_stays_connected(broker_url):
    params = pika.URLParameters(broker_url)
    params.heartbeat = 1
    conn = pika.BlockingConnection(params)
    try:
        deadline = time.monotonic() + 4          # four intervals; pika answers heartbeats
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.5)
        assert conn.is_open
        ch = conn.channel()
        assert ch.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")
    finally:
        conn.close()
