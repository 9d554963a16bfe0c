"""Client ids across a cluster: a client that connects to one node with an id already
connected on another closes that older connection there, as on one node (MQTT 3.1.1
section 3.1.4; RabbitMQ tracks client ids cluster-wide the same way).

Each node puts a key ``/amqpbroker/mqtt-clients/<client id>`` on its lease for every client
it accepts: ``{"node", "claim"}``, a claim unique to that connection, and remembers the
revision etcd gave that put. Every node mirrors etcd (``cluster/membership.py``): when the
key of one of its clients changes to another claim at a later revision, a newer connection
took the id elsewhere, and the local one is closed. The earlier revision never closes the
later one, whichever node sees which event first. A connection that ends deletes the key
if it is still its own (a compare on that revision); a node that dies takes its keys with
its lease.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from urllib.parse import quote, unquote

from ..cluster.etcd import EtcdError, compare, delete_op
from ..cluster.membership import PREFIX

log = logging.getLogger("amqpbroker.mqtt")

CLIENTS = PREFIX + "mqtt-clients/"


class ClusterClientIds:
    def __init__(self, server, cluster):
        self.server = server                # its ``clients``: client id -> connection
        self.cluster = cluster
        self.claims: dict = {}              # connection -> (claim, revision or None)
        self._tasks: set = set()
        cluster.membership.on_view.append(self._view_changed)

    def claim(self, connection) -> None:
        """``connection`` took its client id here: tell the other nodes."""
        self.claims[connection] = (uuid.uuid4().hex, None)
        self._spawn(self._put(connection))

    def release(self, connection) -> None:
        """``connection`` ended: its key goes, if still its own."""
        claim = self.claims.pop(connection, None)
        if claim is not None and claim[1] is not None:
            self._spawn(self._delete(connection.client_id, claim[1]))

    async def _put(self, connection) -> None:
        claim, _ = self.claims[connection]
        value = json.dumps({"node": self.cluster.name, "claim": claim})
        try:
            revision = await self.cluster.etcd.put(_key(connection.client_id), value,
                                                   lease=self.cluster.membership.lease)
        except EtcdError as exc:
            log.warning("MQTT client id '%s' not claimed across the cluster: %s",
                        connection.client_id, exc)
            return
        if self.claims.get(connection, (None,))[0] != claim:
            self._spawn(self._delete(connection.client_id, revision))   # ended meanwhile
            return
        self.claims[connection] = (claim, revision)
        self._check(_key(connection.client_id))

    async def _delete(self, client_id: str, revision: int) -> None:
        key = _key(client_id)
        try:
            await self.cluster.etcd.transact([compare(key, "MOD", "EQUAL", revision)],
                                             [delete_op(key)])
        except EtcdError as exc:
            log.warning("MQTT client id '%s' left claimed in etcd (its node's lease ends "
                        "it): %s", client_id, exc)

    def _view_changed(self) -> None:
        touched = self.cluster.membership.touched
        keys = [k for k in touched if k.startswith(CLIENTS)] if touched is not None \
            else [_key(c.client_id) for c in self.claims]
        for key in keys:
            self._check(key)

    def _check(self, key: str) -> None:
        """Close the local connection of ``key``'s client id if a later claim took it."""
        connection = self.server.clients.get(unquote(key[len(CLIENTS):]))
        claim = self.claims.get(connection) if connection is not None else None
        kv = self.cluster.membership.view.get(key)
        if claim is None or claim[1] is None or kv is None:
            return
        try:
            value = json.loads(kv.value)
        except ValueError:
            return
        if value.get("claim") != claim[0] and kv.mod_revision > claim[1]:
            log.warning("MQTT client id '%s' connected again on node %s", connection.client_id,
                        value.get("node"))
            connection.take_over()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _key(client_id: str) -> str:
    return CLIENTS + quote(client_id, safe="")
