"""How MQTT names map onto AMQP ones, as RabbitMQ's MQTT plugin maps them
(``rabbit_mqtt_util``, ``rabbit_mqtt_processor``).

* A topic is a routing key of the topic exchange (``amq.topic`` by default): ``/`` becomes
  ``.`` and the single-level wildcard ``+`` becomes ``*`` (``#`` is ``#`` in both); a
  delivery's routing key goes back the other way. So ``sensors/+/temp`` binds
  ``sensors.*.temp``, and an AMQP client publishing to ``amq.topic`` with key
  ``sensors.kitchen.temp`` reaches an MQTT subscriber of ``sensors/kitchen/temp``.
* Each client id has two subscription queues, ``mqtt-subscription-<id>qos0`` (QoS 0
  subscriptions: non-durable, auto-delete, consumed with auto-ack) and
  ``mqtt-subscription-<id>qos1`` (QoS 1: durable, consumed with acks; auto-delete for a
  clean session, else kept ``x-expires`` 24 hours after its last consumer).
* The user name may carry the vhost, ``vhost:user`` (split at the last colon), else the
  configured default vhost (``/``).
* An MQTT 5 shared subscription ``$share/<name>/<filter>`` is a queue of the share,
  ``mqtt-shared-<name>-<filter as a routing key>``, bound to the filter and consumed by
  every member: each message goes to one of them, as AMQP's competing consumers.
"""
from __future__ import annotations

import hashlib


def to_amqp(topic: str) -> str:
    return topic.replace("/", ".").replace("+", "*")


def to_mqtt(routing_key: str) -> str:
    return routing_key.replace("*", "+").replace(".", "/")


def subscription_queues(client_id: str) -> tuple[str, str]:
    base = f"mqtt-subscription-{client_id}qos"
    return base + "0", base + "1"


def vhost_and_user(username: str, default_vhost: str) -> tuple[str, str]:
    """RabbitMQ's ``get_vhost_username``: ``vhost:user`` at the last colon."""
    vhost, colon, user = username.rpartition(":")
    return (vhost, user) if colon else (default_vhost, username)


PORT_MAPPING = "mqtt_port_to_vhost_mapping"     # global parameters, as RabbitMQ's
CERT_MAPPING = "mqtt_default_vhosts"


def pick_vhost(username: str, certificate: str | None, port: int, default_vhost: str,
               port_mapping, cert_mapping) -> tuple[str, str]:
    """(vhost, user) of an MQTT login, as RabbitMQ 3.10's ``get_vhost``. With a client
    certificate (its user name, ``--tls-login-from``): the certificate's vhost in
    ``cert_mapping``, else the port's in ``port_mapping``, else ``vhost:user``. Without
    one: ``vhost:user``, else the port's, else ``default_vhost``. The mappings are the
    global parameters' values: JSON objects, a port number (as a string) or a certificate
    name to a vhost."""
    def lookup(mapping, key: str):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        return value if isinstance(value, str) else None
    by_port = lookup(port_mapping, str(port))
    if certificate is not None:
        by_certificate = lookup(cert_mapping, certificate)
        if by_certificate is not None:
            return by_certificate, username
        if by_port is not None:
            return by_port, username
        return vhost_and_user(username, default_vhost)
    if ":" in username:
        return vhost_and_user(username, default_vhost)
    return (by_port, username) if by_port is not None else (default_vhost, username)


def valid_topic(topic: str) -> bool:
    """A topic a message may be published to: not empty, no wildcard, no NUL."""
    return bool(topic) and not any(c in topic for c in "+#\0")


def valid_filter(topic_filter: str) -> bool:
    """A subscription filter: ``#`` only last and alone in its level, ``+`` alone in its."""
    if not topic_filter or "\0" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


SHARE = "$share/"


def shared(topic_filter: str) -> tuple[str, str] | None:
    """(share name, filter) of an MQTT 5 shared subscription's ``$share/<name>/<filter>``;
    None when the share name is empty or holds a wildcard, or no filter follows."""
    name, slash, rest = topic_filter[len(SHARE):].partition("/")
    if not name or any(c in name for c in "+#") or not slash or not valid_filter(rest):
        return None
    return name, rest


def shared_queue(name: str, topic_filter: str) -> str:
    """The queue a share's members consume: ``mqtt-shared-<name>-<filter as a routing
    key>`` (its digest when that would pass the 255 bytes of a queue name)."""
    queue = f"mqtt-shared-{name}-{to_amqp(topic_filter)}"
    if len(queue.encode()) <= 255:
        return queue
    digest = hashlib.sha256(f"{name}/{topic_filter}".encode()).hexdigest()[:32]
    return f"mqtt-shared-{digest}"
