"""A cluster forwarder for in-process tests and benchmarks: the supervisor's ``Forwarder``
with the leaders read from a plain table instead of etcd, and every node at one cluster port."""
from __future__ import annotations

import types

from amqpbroker.cluster.forward import Forwarder


class TableForwarder(Forwarder):
    """The supervisor's forwarder, the leaders read from ``table`` instead of etcd."""

    def __init__(self, broker, table: dict, port: int):
        super().__init__(types.SimpleNamespace(name="n1"), broker)
        self.table = table
        self.port = port

    def leader_of(self, vhost: str, queue: str):
        return self.table.get(queue)

    def registration(self, node: str):
        return {"host": "127.0.0.1", "cluster_port": self.port, "workers": 1}
