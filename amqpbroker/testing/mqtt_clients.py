"""MQTT clients for tests: paho-mqtt on its own network thread (``Client``; ``Client5``
speaks MQTT 5), and raw
sockets for the steps a well-behaved client never takes (``raw``, ``read_packet``). Every
wait is on a callback or a socket read with a timeout."""
from __future__ import annotations

import queue
import socket

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..mqtt import frames as f

TIMEOUT = 15


class Client:
    """A paho client on its own network thread; what arrives lands in ``messages``."""

    def __init__(self, address: tuple, client_id: str, *, clean: bool = True, username="guest",
                 password="guest", will=None, tls=None, websocket_path=None):
        self.messages: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean,
                             transport="websockets" if websocket_path else "tcp")
        if websocket_path:
            self.c.ws_set_options(path=websocket_path)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(*will)
        if tls is not None:                 # an ssl.SSLContext that trusts the broker
            self.c.tls_set_context(tls)
        self.c.on_connect = lambda c, u, flags, rc, props: self.events.put(
            ("connack", rc.value, flags.session_present))
        self.c.on_subscribe = lambda c, u, mid, codes, props: self.events.put(
            ("suback", [code.value for code in codes]))
        self.c.on_unsubscribe = lambda c, u, mid, codes, props: self.events.put(("unsuback",))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.events.put(("closed",))
        self.c.connect(*address, keepalive=30)
        self.c.loop_start()
        self.connack = self.event("connack")

    def event(self, kind: str):
        ev = self.events.get(timeout=TIMEOUT)
        assert ev[0] == kind, ev
        return ev

    def subscribe(self, *topics) -> list:
        self.c.subscribe(list(topics))
        return self.event("suback")[1]

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)      # QoS 1: the PUBACK came
        assert info.is_published()

    def take(self, n: int = 1) -> list:
        return [self.messages.get(timeout=TIMEOUT) for _ in range(n)]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Client5(Client):
    """A paho client speaking MQTT 5: CONNECT with ``properties`` (names as paho's:
    ``SessionExpiryInterval``, ...), events with the reason codes and properties the broker
    sent (``connack``: (code, session present, properties); ``suback`` / ``unsuback``:
    codes; ``closed``: the DISCONNECT's code)."""

    def __init__(self, address: tuple, client_id: str, *, clean_start: bool = True,
                 username="guest", password="guest", properties: dict | None = None,
                 will=None, will_properties: dict | None = None):
        self.messages = queue.Queue()
        self.events = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(*will, properties=props(PacketTypes.WILLMESSAGE, will_properties))
        self.c.on_connect = lambda c, u, flags, rc, p: self.events.put(
            ("connack", rc.value, flags.session_present, p))
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.events.put(
            ("suback", [code.value for code in codes]))
        self.c.on_unsubscribe = lambda c, u, mid, codes, p: self.events.put(
            ("unsuback", [code.value for code in codes]))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.events.put(("closed", rc.value))
        self.c.connect(*address, keepalive=30, clean_start=clean_start,
                       properties=props(PacketTypes.CONNECT, properties))
        self.c.loop_start()
        self.connack = self.event("connack")

    def subscribe(self, *topics, properties: dict | None = None) -> list:
        """``topics``: (filter, qos) or (filter, paho SubscribeOptions)."""
        self.c.subscribe([(t, o if isinstance(o, SubscribeOptions) else SubscribeOptions(o))
                          for t, o in topics], properties=props(PacketTypes.SUBSCRIBE, properties))
        return self.event("suback")[1]

    def unsubscribe(self, *topics) -> list:
        self.c.unsubscribe(list(topics))
        return self.event("unsuback")[1]

    def publish(self, topic, payload, qos=0, retain=False, properties: dict | None = None):
        """Returns the PUBACK's reason code for QoS 1 (None for QoS 0)."""
        codes: queue.Queue = queue.Queue()
        self.c.on_publish = lambda c, u, mid, rc, p: codes.put(rc.value)
        info = self.c.publish(topic, payload, qos=qos, retain=retain,
                              properties=props(PacketTypes.PUBLISH, properties))
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()
        return codes.get(timeout=TIMEOUT) if qos else None

    def disconnect(self, reason: int = 0, properties: dict | None = None):
        self.c.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=reason),
                          properties=props(PacketTypes.DISCONNECT, properties))
        self.event("closed")
        self.c.loop_stop()


def props(packet_type, values: dict | None):
    """paho's Properties of ``packet_type`` from a dict by paho's names, or None."""
    if not values:
        return None
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def raw(address: tuple, client_id: str, **kw) -> socket.socket:
    """A socket that sent CONNECT and read its CONNACK (asserted accepted)."""
    s = socket.create_connection(address, timeout=TIMEOUT)
    s.sendall(f.connect_packet(client_id, **kw))
    assert read_packet(s) == (f.CONNACK << 4, b"\x00\x00")
    return s


def read_packet(s: socket.socket):
    """(first byte, body) of the next packet, None when the broker closed the socket."""
    head = s.recv(1)
    if not head:
        return None
    length, shift = 0, 0
    while True:
        byte = s.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        assert chunk
        body += chunk
    return head[0], body


def closed_by_broker(s: socket.socket) -> bool:
    try:
        while True:
            if read_packet(s) is None:
                return True
    except ConnectionResetError:
        return True
