"""The stream protocol's port (``--stream-port``; RabbitMQ's rabbitmq_stream listens on
5552): each accepted connection is a ``StreamConnection``. It runs in the metadata owner's
process and reaches the queues through the AMQP listener, in every layout, as the MQTT and
STOMP ports do."""
from __future__ import annotations

from ..adapter import AdapterServer
from .connection import StreamConnection


class StreamServer(AdapterServer):
    connection_class = StreamConnection

    def stream_deleted(self, vhost: str, stream: str) -> None:
        """A client deleted ``stream``: every connection with publishers or subscriptions on
        it is told (MetadataUpdate), as RabbitMQ tells them."""
        for connection in list(self.connections):
            connection.stream_gone(vhost, stream)
