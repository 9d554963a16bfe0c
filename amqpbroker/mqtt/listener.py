"""The MQTT port: accepts connections (``connection.py``), knows which client ids are
connected (a new connection with an id in use closes the old one, MQTT 3.1.1 section
3.1.4; in a cluster on every node: ``client_ids.py``), and keeps the retained messages
(``retained.py``). It runs in the metadata owner's process and reaches the queues through
the AMQP listener, in every layout."""
from __future__ import annotations

import asyncio
import logging
import os

from ..adapter import AdapterServer
from .client_ids import ClusterClientIds
from .connection import MqttConnection
from .frames import SERVER_SHUTTING_DOWN

log = logging.getLogger("amqpbroker.mqtt")
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
        self.endings: set = set()       # MQTT 5 sessions' queues being deleted

    def register(self, connection: MqttConnection) -> None:
        old = self.clients.get(connection.client_id)
        self.clients[connection.client_id] = connection
        if old is not None and old is not connection:
            old.take_over(connection)
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

    def end_session(self, vhost: str, queue: str) -> None:
        """An MQTT 5 session with expiry 0 ended: its kept queue goes (a task: the
        connection is already closed)."""
        task = asyncio.get_running_loop().create_task(self._delete(vhost, queue))
        self.endings.add(task)
        task.add_done_callback(self.endings.discard)

    async def _delete(self, vhost: str, queue: str) -> None:
        try:
            await self.broker.metadata.delete_queue(vhost=vhost, name=queue, owner=None,
                                                    if_unused=False, if_empty=False)
        except Exception as exc:        # noqa: BLE001 -- logged; it expires by x-expires
            log.warning("MQTT session queue '%s' in vhost '%s' not deleted: %s", queue,
                        vhost, exc)

    async def stop(self) -> None:
        for connection in list(self.connections):     # MQTT 5: why (0x8B)
            connection.disconnect(SERVER_SHUTTING_DOWN)
        await super().stop()
        if self.endings:
            await asyncio.gather(*self.endings, return_exceptions=True)
        self.retained.flush()
