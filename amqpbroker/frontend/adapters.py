"""Connections that carry another protocol's client: the MQTT listener (``amqpbroker/mqtt``)
reaches the queues over an AMQP connection of its own for each MQTT client, as RabbitMQ 3.10's
MQTT plugin does over a direct connection. RabbitMQ's management API shows such a connection
with the MQTT client's address and protocol (``MQTT 3.1.1``); so does ours.

The adapter names the client in a client property, ``amqpbroker_adapted``, signed with the
node's internal secret (``auth.INTERNAL_SECRET_ENV``: the supervisor's, inherited by its
front-ends), so no other client can pass for one. The session takes the address, the protocol
and the client properties to show from it (RabbitMQ shows an MQTT client's as ``type``
``direct`` with ``client_id`` and ``product``), and drops the property from what it shows. It changes what is shown and logged,
nothing that is allowed: the client logged in with its own credentials.

Direct deliveries: an adapter that takes a stream's deliveries as records (the stream
protocol's, ``deliver_stream_run``) registers itself here and names its token in the claim.
A session in the same process finds it (``direct_target``) and hands it those records
instead of writing ``basic.deliver`` frames that the adapter would read back off a loopback
socket -- what RabbitMQ's plugins do over their direct connection. Where the adapter is in
another process (the split layout: the adapters run in the supervisor, the session in a
front-end), the token names nothing there and the frames go as before.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import weakref

PROPERTY = "amqpbroker_adapted"
AMQP10 = "AMQP 1-0"             # the AMQP 1.0 listener's connections (amqp10/), as RabbitMQ
                                # names the protocol; their channels widen a link's prefetch


# token -> an adapter connection of this process that takes direct deliveries
_DIRECT: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def register_direct(target) -> str:
    """A token naming ``target`` to sessions of this process (until it is collected or
    ``unregister_direct``)."""
    token = secrets.token_hex(8)
    _DIRECT[token] = target
    return token


def unregister_direct(token: str | None) -> None:
    _DIRECT.pop(token, None)


def direct_target(token) -> object | None:
    """The adapter connection of this process ``token`` names, or None."""
    return _DIRECT.get(token) if isinstance(token, str) else None


def _digest(secret: str, fields: dict) -> str:
    text = "|".join(str(fields.get(k)) for k in ("protocol", "peer_host", "peer_port", "host",
                                                   "port", "ssl", "direct"))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def claim(secret: str, protocol: str, peer: tuple, local: tuple, ssl: bool,
          shown: dict, direct: str | None = None) -> dict:
    """The client property an adapter sends (``PROPERTY`` -> this table); ``shown``: the
    client properties to show instead of the AMQP client library's; ``direct``: its
    ``register_direct`` token, if it takes direct deliveries."""
    fields = {"protocol": protocol, "peer_host": peer[0], "peer_port": peer[1],
              "host": local[0], "port": local[1], "ssl": ssl}
    if direct is not None:
        fields["direct"] = direct
    return {**fields, "shown": shown, "signature": _digest(secret, fields)}


def verified(secret: str, client_properties: dict) -> dict | None:
    """The adapter's table when its signature holds, else None."""
    table = client_properties.get(PROPERTY)
    if not secret or not isinstance(table, dict):
        return None
    signature = table.get("signature")
    if isinstance(signature, bytes):
        signature = signature.decode(errors="replace")
    fields = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v)
              for k, v in table.items() if k not in ("signature", "shown")}
    if not isinstance(signature, str) or \
            not hmac.compare_digest(signature, _digest(secret, fields)):
        return None
    shown = table.get("shown")
    return {**fields, "shown": shown if isinstance(shown, dict) else {}}
