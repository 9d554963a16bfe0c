"""A cluster node's followers of the etcd mirror in this process, without etcd: for tests and
benchmarks of what one etcd event costs and does.

``ViewNode(broker)`` wires what ``cluster/node.py`` wires on an in-process broker (``--workers
0``: a ``MetadataOwner`` over a ``LocalLink`` host): the metadata applier (``EtcdMetadata``),
the replication (``Replication``) and the forwarder (``Forwarder``), called back by a real
``Membership`` in their order. The membership never joins etcd: ``put`` and ``delete`` change
its view as the watch does (revisions counted here), and ``event`` ends a watch event: the
view's revision moves and the callbacks run with the keys changed since the last one
(``Membership.touched``); ``fresh_list`` is a fresh list of etcd (every key may have changed).

``ViewNode(broker, controller=True)`` makes the node the controller too (``Controller`` and
``Placement`` called back first, as ``cluster/node.py`` wires them): its election key and
lease are in the view, and its etcd is ``ViewEtcd``, whose transactions change the view;
what they wrote reaches the callbacks at the next ``event`` (``settle`` runs the passes
until nothing is left to do). ``broker`` None: the controller only.
"""
from __future__ import annotations

import base64
import json

from amqpbroker.cluster.controller import CONTROLLER, Controller
from amqpbroker.cluster.etcd import KeyValue
from amqpbroker.cluster.forward import Forwarder
from amqpbroker.cluster.membership import NODES, Membership
from amqpbroker.cluster.metadata import EtcdMetadata, binding_key, dumps, meta_key
from amqpbroker.cluster.placement import Placement, partition_key
from amqpbroker.cluster.replication import Replication
from amqpbroker.config import Config


class ViewEtcd:
    """etcd's ``txn``, ``put`` and ``delete`` over a ``ViewNode``'s view (compares of a key's
    create or mod revision, as the controller writes): the watch event comes with the next
    ``event``."""

    def __init__(self, node: "ViewNode"):
        self.node = node

    def _holds(self, c: dict) -> bool:
        kv = self.node.membership.view.get(base64.b64decode(c["key"]).decode())
        field = {"CREATE": "create_revision", "MOD": "mod_revision"}[c["target"]]
        have, want = (getattr(kv, field) if kv is not None else 0), int(c[field])
        return {"EQUAL": have == want, "NOT_EQUAL": have != want,
                "GREATER": have > want, "LESS": have < want}[c["result"]]

    async def transact(self, compares, success, failure=()):
        held = all(self._holds(c) for c in compares)
        for op in success if held else failure:
            if "request_put" in op:
                req = op["request_put"]
                self.node.put(base64.b64decode(req["key"]).decode(),
                              base64.b64decode(req["value"]).decode())
            else:
                req = op["request_delete_range"]
                key = base64.b64decode(req["key"]).decode()
                doomed = ([k for k in self.node.membership.view if k.startswith(key)]
                          if "range_end" in req else [key])
                for k in doomed:
                    self.node.delete(k)
        return held, [], self.node.revision

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        self.node.put(key, value)
        return self.node.revision

    async def delete(self, key: str) -> None:
        self.node.delete(key)


class ViewNode:
    def __init__(self, broker, name: str = "n1", controller: bool = False):
        self.name = name
        self.cfg = Config(replica_lag_time=10.0, replica_confirm_timeout=30.0)
        self.broker = broker
        self.membership = m = Membership(ViewEtcd(self), name, {}, 3)
        self.revision = 1
        self._changed: set[str] = set()
        self.controller = self.placement = None
        if controller:                      # first, as cluster/node.py wires them
            m.lease, m.deadline = 1, float("inf")
            self.put(CONTROLLER + "1", name)
            self.controller = Controller(m)
            self.placement = Placement(self)
        # (name, callback) in the membership's order: the benches time each
        self.followers = [] if not controller else [("controller", self.controller._review),
                                                    ("placement", self.placement._review)]
        if broker is None:
            return
        self.forwarder = Forwarder(self, broker)
        self.replication = self.forwarder.replication = Replication(self, broker,
                                                                    self.forwarder)
        self.metadata = EtcdMetadata(broker, self)
        # in cluster/node.py's order; a checkout whose replication has no follow_view
        # reviews every queue on every event
        followers = [
            ("applier", self.metadata._on_view),
            ("replication", getattr(self.replication, "follow_view",
                                    self.replication.review)),
            ("forwarder", self.forwarder.follow_view)]
        self.followers += followers
        m.on_view.extend(cb for _, cb in followers)

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
        self.membership.remove(key)
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

    async def settle(self, rounds: int = 1000) -> None:
        """Run the controller's passes, each write's watch event, the passes it starts...
        until the controller has nothing left to write."""
        for _ in range(rounds):
            task = self.placement._task
            if task is not None and not task.done():
                await task
            elif self._changed:
                self.event()
            else:
                return
        raise AssertionError(f"the controller still writes after {rounds} passes")

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
            "controller_epoch": 1,
            "queue_rev": self._created(meta_key("queue", vhost, queue))}, quiet)

    def put_node(self, name: str, port: int) -> KeyValue:
        return self.put(NODES + name, {"name": name, "host": "127.0.0.1", "cluster_port": port,
                                       "workers": 1, "state": "running"})

    def _created(self, key: str) -> int:
        kv = self.membership.view.get(key)
        return kv.create_revision if kv is not None else 0

    def state(self, key: str) -> dict | None:
        kv = self.membership.view.get(key)
        return json.loads(kv.value) if kv is not None else None

    async def close(self) -> None:
        if self.broker is None:
            return
        await self.replication.close()
        await self.forwarder.close()
        await self.metadata.close()
