"""Rule 1: every transition of the connection's state machine lives in this table.

A connection moves through the handshake (header, start/start-ok, tune/tune-ok, open) to
OPEN, and from there to CLOSING (we sent connection.close and await close-ok) or CLOSED.
The table is keyed by (state, what happened); a pair that is not in it is a protocol error
that names the state, raised by ``transition``. Channel states are simpler and live beside:
a channel is OPEN or CLOSING (we sent channel.close and drop its frames until close-ok).
"""
from __future__ import annotations

from ..errors import CommandInvalid

AWAIT_HEADER = "AWAIT_HEADER"
AWAIT_START_OK = "AWAIT_START_OK"
AWAIT_TUNE = "AWAIT_TUNE"            # start-ok received; the server decides and sends tune
AWAIT_TUNE_OK = "AWAIT_TUNE_OK"
AWAIT_OPEN = "AWAIT_OPEN"
OPENING = "OPENING"                  # connection.open received; the server answers open-ok
OPEN = "OPEN"
CLOSING = "CLOSING"
CLOSED = "CLOSED"

# (state, event) -> next state. Events are method names, "header", or our own actions ("send:x").
TRANSITIONS = {
    (AWAIT_HEADER, "header"): AWAIT_START_OK,
    (AWAIT_START_OK, "Connection.StartOk"): AWAIT_TUNE,
    (AWAIT_TUNE, "send:connection.tune"): AWAIT_TUNE_OK,
    (AWAIT_TUNE_OK, "Connection.TuneOk"): AWAIT_OPEN,
    (AWAIT_OPEN, "Connection.Open"): OPENING,
    (OPENING, "send:connection.open-ok"): OPEN,
    (OPEN, "Connection.Close"): CLOSED,
    (OPEN, "send:connection.close"): CLOSING,
    (AWAIT_START_OK, "send:connection.close"): CLOSING,
    (AWAIT_TUNE, "send:connection.close"): CLOSING,
    (AWAIT_TUNE_OK, "send:connection.close"): CLOSING,
    (AWAIT_OPEN, "send:connection.close"): CLOSING,
    (OPENING, "send:connection.close"): CLOSING,
    (AWAIT_START_OK, "Connection.Close"): CLOSED,
    (AWAIT_TUNE, "Connection.Close"): CLOSED,
    (AWAIT_TUNE_OK, "Connection.Close"): CLOSED,
    (AWAIT_OPEN, "Connection.Close"): CLOSED,
    (CLOSING, "Connection.CloseOk"): CLOSED,
    (CLOSING, "Connection.Close"): CLOSED,
}

# Methods a client may send on channel 0 while the connection is OPEN (RabbitMQ's reader: any
# other is 504 "unexpected method in connection state running")
CHANNEL_ZERO_METHODS = {"Connection.Close", "Connection.UpdateSecret"}

CHANNEL_OPEN = "OPEN"
CHANNEL_CLOSING = "CLOSING"


def transition(state: str, event: str) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise CommandInvalid(f"'{event}' not expected in connection state {state}") from None
