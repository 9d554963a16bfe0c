"""SASL AMQPLAIN (a field table with LOGIN and PASSWORD), as py-amqp can send it."""
from __future__ import annotations

from pamqp import commands as spec
from pamqp import encode
from pamqp import header as pheader

from .conftest import CLIENT_PROPERTIES


def amqplain(user: str, password: str) -> bytes:
    table = encode.field_table({"LOGIN": user, "PASSWORD": password})
    # AMQPLAIN sends the table without its length prefix; pamqp wants the longstr as str
    return table[4:].decode("ascii")


def login(raw, response: str):
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    _, start = p.recv_method()
    assert "AMQPLAIN" in start.mechanisms.split()
    p.send_method(0, spec.Connection.StartOk(client_properties=CLIENT_PROPERTIES,
                                             mechanism="AMQPLAIN", response=response,
                                             locale="en_US"))
    return p, p.recv_method()[1]


def test_amqplain_login_succeeds(raw):
    p, tune = login(raw, amqplain("guest", "guest"))
    assert tune.name == "Connection.Tune"
    p.send_method(0, spec.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0))
    p.send_method(0, spec.Connection.Open(virtual_host="/"))
    assert p.recv_method()[1].name == "Connection.OpenOk"


def test_amqplain_bad_password_is_403(raw):
    _, close = login(raw, amqplain("guest", "wrong"))
    assert close.name == "Connection.Close"
    assert close.reply_code == 403
    assert close.reply_text.startswith(
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN")
