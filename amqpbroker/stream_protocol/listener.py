"""The stream protocol's port (``--stream-port``; RabbitMQ's rabbitmq_stream listens on
5552): each accepted connection is a ``StreamConnection``. It runs in the metadata owner's
process and reaches the queues through the AMQP listener, in every layout, as the MQTT and
STOMP ports do."""
from __future__ import annotations

from ..adapter import AdapterServer
from .connection import StreamConnection


class SingleActiveConsumers:
    """RabbitMQ 3.11's single active consumer for streams: the subscriptions of one name on
    one stream (``single-active-consumer: true``, ``name``) form a group, in the order they
    came; one of them consumes. On a plain stream it is the first; on a super stream's
    partition (``super-stream``) it is the one at the partition's index modulo the group's
    size, so a super stream's partitions spread over its consumers (RabbitMQ's
    ``rabbit_stream_sac_coordinator``). When one leaves, the group is assigned again: the
    new active one is asked where to start (``StreamConnection.activate``), one that stops
    being active is told. Groups are this node's: in a cluster, consumers of one group
    connected to different nodes are not coordinated."""

    def __init__(self):
        self.groups: dict[tuple, list] = {}     # (vhost, stream, name) -> [(conn, sub)]

    def join(self, connection, sub) -> None:
        self.groups.setdefault(sub.group, []).append((connection, sub))
        self._assign(sub.group)

    def leave(self, connection, sub) -> None:
        members = self.groups.get(sub.group)
        if members is None or (connection, sub) not in members:
            return
        members.remove((connection, sub))
        sub.active = False
        if members:
            self._assign(sub.group)
        else:
            del self.groups[sub.group]

    def _assign(self, group: tuple) -> None:
        members = self.groups[group]
        partition = members[0][1].partition
        chosen = (partition or 0) % len(members)
        for i, (connection, sub) in enumerate(members):
            if i == chosen and not sub.active:
                connection.activate(sub)
            elif i != chosen and sub.active:
                connection.deactivate(sub)


class StreamServer(AdapterServer):
    connection_class = StreamConnection

    def __init__(self, broker):
        super().__init__(broker)
        self.single_active = SingleActiveConsumers()

    def stream_deleted(self, vhost: str, stream: str) -> None:
        """A client deleted ``stream``: every connection with publishers or subscriptions on
        it is told (MetadataUpdate), as RabbitMQ tells them."""
        for connection in list(self.connections):
            connection.stream_gone(vhost, stream)
