"""A cluster node's followers of the etcd mirror in this process, without etcd: for tests and
benchmarks of what one etcd event costs and does.

``ViewNode(broker)`` wires what ``cluster/node.py`` wires on an in-process broker (``--workers
0``: a ``MetadataOwner`` over a ``LocalLink`` host): the metadata applier (``EtcdMetadata``),
the replication (``Replication``) and the forwarder (``Forwarder``), called back by a real
``Membership`` in their order. The membership never joins etcd: ``put`` and ``delete`` change
its view as the watch does (revisions counted here), and ``event`` ends a watch event: the
view's revision moves and the callbacks run with the keys changed since the last one
(``Membership.touched``); ``fresh_list`` is a fresh list of etcd (every key may have changed).
"""
from __future__ import annotations

import json
import types

from amqpbroker.cluster.etcd import KeyValue
from amqpbroker.cluster.forward import Forwarder
from amqpbroker.cluster.membership import NODES, Membership
from amqpbroker.cluster.metadata import EtcdMetadata, binding_key, dumps, meta_key
from amqpbroker.cluster.placement import partition_key
from amqpbroker.cluster.replication import Replication


class ViewNode:
    def __init__(self, broker, name: str = "n1"):
        self.name = name
        self.cfg = types.SimpleNamespace(replica_lag_time=10.0, replica_confirm_timeout=30.0)
        self.broker = broker
        self.membership = m = Membership(None, name, {}, 3)
        self.forwarder = Forwarder(self, broker)
        self.replication = self.forwarder.replication = Replication(self, broker,
                                                                    self.forwarder)
        self.metadata = EtcdMetadata(broker, self)
        # in cluster/node.py's order; a checkout whose replication has no follow_view
        # reviews every queue on every event
        self.followers = [
            ("applier", self.metadata._on_view),
            ("replication", getattr(self.replication, "follow_view",
                                    self.replication.review)),
            ("forwarder", self.forwarder.follow_view)]
        m.on_view.extend(cb for _, cb in self.followers)
        self.revision = 1
        self._changed: set[str] = set()

    def holds_lease(self) -> bool:
        return False

    def put(self, key: str, value, quiet: bool = False) -> KeyValue:
        """Put ``value`` (a dict: as the metadata writes it) at ``key`` in the view; ``quiet``:
        the next event does not name it (a test's probe of what a pass looks at)."""
        self.revision += 1
        was = self.membership.view.get(key)
        kv = KeyValue(key, value if isinstance(value, str) else dumps(value),
                      was.create_revision if was is not None else self.revision,
                      self.revision, 0)
        self.membership.view[key] = kv
        self.membership._view_changed({key})
        if not quiet:
            self._changed.add(key)
        return kv

    def delete(self, key: str, quiet: bool = False) -> None:
        self.revision += 1
        self.membership.view.pop(key, None)
        self.membership._view_changed({key})
        if not quiet:
            self._changed.add(key)

    def event(self) -> None:
        """A watch event with what was put and deleted since the last one."""
        keys, self._changed = self._changed, set()
        self.membership.revision = self.revision
        self.membership._notify(keys)

    def fresh_list(self) -> None:
        """A fresh list of etcd (a start, a broken watch): any key may have changed."""
        self._changed = set()
        self.membership.revision = self.revision
        self.membership._notify()

    # the objects, as the metadata and the controller write them
    def put_vhost(self, name: str) -> KeyValue:
        return self.put(meta_key("vhost", name), {"name": name, "description": "", "tags": [],
                                                  "limits": {}})

    def put_exchange(self, vhost: str, name: str, type: str = "direct") -> KeyValue:
        return self.put(meta_key("exchange", vhost, name), {
            "vhost": vhost, "name": name, "type": type, "durable": True, "auto_delete": False,
            "internal": False, "arguments": {}})

    def put_queue(self, vhost: str, name: str, arguments: dict | None = None,
                  quiet: bool = False) -> KeyValue:
        return self.put(meta_key("queue", vhost, name), {
            "vhost": vhost, "name": name, "durable": True, "auto_delete": False,
            "arguments": arguments or {}, "node": self.name, "uuid": f"{self.revision}"},
            quiet)

    def put_binding(self, vhost: str, source: str, queue: str, key: str = "") -> KeyValue:
        view = self.membership.view
        return self.put(binding_key(vhost, source, "queue", queue, key, {}), {
            "vhost": vhost, "source": source, "dest_kind": "queue", "destination": queue,
            "key": key, "arguments": {},
            "source_rev": view[meta_key("exchange", vhost, source)].create_revision,
            "dest_rev": view[meta_key("queue", vhost, queue)].create_revision})

    def put_partition(self, vhost: str, queue: str, replicas: list, leader=None,
                      epoch: int = 0, isr=None, quiet: bool = False) -> KeyValue:
        return self.put(partition_key(vhost, queue, 0), {
            "replicas": list(replicas), "leader": leader, "leader_epoch": epoch,
            "isr": list(replicas if isr is None else isr), "min_isr": 1,
            "controller_epoch": 1, "queue_rev": 0}, quiet)

    def put_node(self, name: str, port: int) -> KeyValue:
        return self.put(NODES + name, {"name": name, "host": "127.0.0.1", "cluster_port": port,
                                       "workers": 1, "state": "running"})

    def state(self, key: str) -> dict | None:
        kv = self.membership.view.get(key)
        return json.loads(kv.value) if kv is not None else None

    async def close(self) -> None:
        await self.replication.close()
        await self.forwarder.close()
        await self.metadata.close()
