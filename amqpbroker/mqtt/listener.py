"""The MQTT port: accepts connections (``connection.py``), knows which client ids are
connected (a new connection with an id in use closes the old one, MQTT 3.1.1 section
3.1.4; in a cluster on every node: ``client_ids.py``), and keeps the retained messages
(``retained.py``). It runs in the metadata owner's process and reaches the queues through
the AMQP listener, in every layout."""
from __future__ import annotations

import os

from ..adapter import AdapterServer
from .client_ids import ClusterClientIds
from .connection import MqttConnection
from .retained import RetainedStore


class MqttServer(AdapterServer):
    connection_class = MqttConnection
    # RabbitMQ's rabbitmq_web_mqtt: port 15675, path /ws, MQTT in binary messages
    web_name = "Web MQTT"
    web_subprotocols = ("mqtt", "mqttv3.1")

    def __init__(self, broker):
        super().__init__(broker)
        self.clients: dict[str, MqttConnection] = {}        # client id -> its connection
        self.retained = RetainedStore(os.path.join(broker.config.data_dir, "mqtt"))
        self.cluster_ids: ClusterClientIds | None = None    # in a cluster, once used

    def register(self, connection: MqttConnection) -> None:
        old = self.clients.get(connection.client_id)
        self.clients[connection.client_id] = connection
        if old is not None and old is not connection:
            old.take_over()
        cluster = self.broker.cluster
        if cluster is not None:
            if self.cluster_ids is None:
                self.cluster_ids = ClusterClientIds(self, cluster)
            self.cluster_ids.claim(connection)

    def forget(self, connection: MqttConnection) -> None:
        self.connections.discard(connection)
        if self.clients.get(connection.client_id) is connection:
            del self.clients[connection.client_id]
        if self.cluster_ids is not None:
            self.cluster_ids.release(connection)

    async def stop(self) -> None:
        await super().stop()
        self.retained.flush()
