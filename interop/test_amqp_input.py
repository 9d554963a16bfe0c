"""Input a client may send that RabbitMQ accepts, or answers with a protocol reply: names
outside pamqp's name regex, malformed credentials and tables, argument limits, the handshake
timeout. Run against RabbitMQ (AMQP_URL) and against ours with the same code."""
from __future__ import annotations

import struct
import time

import pika
import pytest
from pamqp import commands as spec
from pamqp import encode
from pamqp import header as pheader
from pika.exceptions import ChannelClosedByBroker

from .conftest import CLIENT_PROPERTIES

NAMES = ["orders!", "ünï", "a\x00b", "tab\tand\"quote'", "日本語-キュー"]


@pytest.mark.parametrize("name", NAMES)
def test_any_utf8_name_works_end_to_end(connect, uniq, name):
    name = f"{name}-{uniq('n')}"
    ch = connect().channel()
    assert ch.queue_declare(name, auto_delete=True).method.queue == name
    assert ch.queue_declare(name, passive=True).method.queue == name
    ch.exchange_declare(name, "direct", auto_delete=True)
    ch.exchange_declare(name, "direct", passive=True)
    ch.queue_bind(name, name, routing_key=name)
    ch.confirm_delivery()
    ch.basic_publish(name, name, b"payload", mandatory=True)
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert (method.exchange, method.routing_key, body) == (name, name, b"payload")
    ch.queue_unbind(name, name, routing_key=name)
    assert ch.queue_delete(name).method.message_count == 0
    ch.exchange_delete(name)


# ------------------------------------------------------------------------ x-match

@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_x_match_modes_rabbitmq_accepts(connect, uniq, mode):
    ch = connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.headers", arguments={"x-match": mode, "h": uniq("v")})


@pytest.mark.parametrize("mode, text", [
    ("ALL", 'Invalid x-match field value <<"ALL">>; expected all, any, all-with-x, or '
            'any-with-x'),
    ("bogus", 'Invalid x-match field value <<"bogus">>; expected all, any, all-with-x, or '
              'any-with-x'),
    (5, "Invalid x-match field type signedint (value 5); expected longstr"),
    (b"any", 'Invalid x-match field type binary (value <<"any">>); expected longstr'),
])
def test_other_x_match_is_406(connect, uniq, mode, text):
    c = connect()
    q = c.channel().queue_declare("", exclusive=True).method.queue
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind(q, "amq.headers", arguments={"x-match": mode, "h": "v"})
    assert (e.value.reply_code, e.value.reply_text) == (406, f"PRECONDITION_FAILED - {text}")
    # nothing was bound: a message with the binding's header is not routed
    pub = c.channel()
    pub.confirm_delivery()
    pub.basic_publish("amq.headers", "", b"x", pika.BasicProperties(headers={"h": "v"}))
    assert pub.queue_declare(q, passive=True).method.message_count == 0


def test_other_x_match_on_exchange_bind_is_406(connect, uniq):
    c = connect()
    setup = c.channel()
    src, dst = uniq("hx"), uniq("fx")
    setup.exchange_declare(src, "headers", auto_delete=True)
    setup.exchange_declare(dst, "fanout", auto_delete=True)
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_bind(dst, src, arguments={"x-match": "none"})
    assert e.value.reply_code == 406
    setup.exchange_delete(src)
    setup.exchange_delete(dst)


# ------------------------------------------------------------------- argument limits
# RabbitMQ 3.10 (rabbit_misc:check_expiry) allows up to ten years in ms, not 2^32-1: checked
# against RabbitMQ 3.10.8 with this very file.

@pytest.mark.parametrize("key", ["x-expires", "x-message-ttl"])
def test_expiry_arguments_up_to_ten_years(connect, uniq, key):
    ch = connect().channel()
    for value in (2 ** 32 - 1, 2 ** 32, 315_360_000_000):
        name = uniq("lim")
        ch.queue_declare(name, arguments={key: value})
        ch.queue_delete(name)
    name = uniq("lim")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(name, arguments={key: 315_360_000_001})
    assert (e.value.reply_code, e.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': "
             f"{{value_too_large,315360000001}}")


@pytest.mark.parametrize("expiration", ["4294967295", "4294967296", "315360000000", "+5", "05",
                                        "-0"])
def test_per_message_expiration_accepted(connect, uniq, expiration):
    ch = connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))


@pytest.mark.parametrize("expiration, problem", [
    ("315360000001", "{value_too_large,315360000001}"),
    ("١٢٣", "no_integer"),             # Arabic-Indic digits: int() reads them, RabbitMQ not
    ("１２", "no_integer"),             # full-width digits
    (" 5", "no_integer"),
    ("5 ", '{leftover_string," "}'),
])
def test_per_message_expiration_refused(connect, expiration, problem):
    ch = connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    assert (e.value.reply_code, e.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid expiration '{expiration}': {problem}")


# ------------------------------------------------------------------- AMQPLAIN types

def test_amqplain_password_of_another_type_is_a_refused_login(raw):
    """RabbitMQ answers a number as PASSWORD 403 (its other malformed cases crash it, see
    tests/integration/test_bad_input.py)."""
    p = raw()
    p.send(pheader.ProtocolHeader().marshal())
    p.recv_method()
    response = encode.field_table({"LOGIN": "guest", "PASSWORD": 5})[4:]
    payload = (struct.pack(">HH", 10, 11) + encode.field_table(CLIENT_PROPERTIES)
               + encode.short_string("AMQPLAIN") + struct.pack(">I", len(response)) + response
               + encode.short_string("en_US"))
    p.send(struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce")
    close = p.recv_method()[1]
    assert (close.name, close.reply_code) == ("Connection.Close", 403)
    assert close.reply_text.startswith(
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN")


# ------------------------------------------------------------------- handshake timeout

def test_handshake_timeout_runs_until_connection_open(raw):
    """RabbitMQ's handshake_timeout (10 s) ends a connection that is not running, i.e. has
    not sent connection.open, tune-ok or not."""
    p = raw()
    p.sock.settimeout(30)
    p.send(pheader.ProtocolHeader().marshal())
    p.recv_method()
    p.send_method(0, spec.Connection.StartOk(client_properties=CLIENT_PROPERTIES,
                                             mechanism="PLAIN", response="\0guest\0guest",
                                             locale="en_US"))
    tune = p.recv_method()[1]
    p.send_method(0, spec.Connection.TuneOk(channel_max=tune.channel_max, frame_max=131072,
                                            heartbeat=0))
    started = time.monotonic()
    p.read_to_eof()                                  # socket.timeout after 30 s: never closed
    assert time.monotonic() - started < 20
