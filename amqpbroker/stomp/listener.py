"""The STOMP ports (``--stomp-port``, ``--stomp-tls-port``, ``--web-stomp-port``): each
accepted connection is a ``StompConnection``. They run in the metadata owner's process and
reach the queues through the AMQP listener, in every layout, as the MQTT ports do."""
from __future__ import annotations

from ..adapter import AdapterServer
from .connection import StompConnection


class StompServer(AdapterServer):
    connection_class = StompConnection
    # RabbitMQ's rabbitmq_web_stomp: port 15674, path /ws, frames in text messages (binary
    # ones are taken too)
    web_name = "Web STOMP"
    web_subprotocols = ("v10.stomp", "v11.stomp", "v12.stomp")
    web_text = True
