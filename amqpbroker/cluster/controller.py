"""The controller: elected with etcd's election recipe; for now it knows the live nodes.

Election (etcd's ``concurrency.Election``, as ``etcdctl elect`` runs it)
----------------------------------------------------------------------
Each node, on every lease it gets, puts ``/amqpbroker/controller/<lease id in hex>`` = its
name on that lease, with a transaction that creates the key only if it does not exist. The
candidate whose key has the lowest create revision is the controller; the others wait until
every key older than theirs is gone (their owners left, or their leases expired), which they
see in the membership's mirror of etcd (``membership.py``). So there is one controller at a
time, and the next is the oldest surviving candidate: a killed controller is replaced when
its lease expires (the TTL plus etcd's expiry check, ~0.5 s), one that leaves cleanly at once.

The winning key's create revision is the controller's *epoch*: it only grows, so the next
steps can stamp the controller's writes with it and refuse a deposed controller's (Kafka's
controller epoch), on top of the lease check every etcd write will carry.

A node counts itself controller only while it holds its lease (``holds_lease``): a fenced
node, whose key may already be gone in etcd though its stale mirror still shows it, never
does.

The controller's work, for now: it keeps the set of live nodes and logs every change (a
node joined, left cleanly, or was lost when its lease expired). Placement comes next
(docs/CLUSTER.md): it reacts to exactly these changes.
"""
from __future__ import annotations

import json
import logging

from .membership import PREFIX, Membership

log = logging.getLogger("amqpbroker.cluster")

CONTROLLER = PREFIX + "controller/"


class Controller:
    def __init__(self, membership: Membership):
        self.membership = membership
        self.active = False                 # this node is the controller
        self.nodes: dict[str, dict] = {}    # the live nodes, name -> registration
        self.on_nodes: list = []            # while active, callbacks(joined, gone): placement
        self.on_role: list = []             # callbacks(active) when this node becomes or
        #                                     stops being the controller: shovels
        membership.on_lease.append(self.campaign)
        membership.on_view.append(self._review)
        membership.on_fence.append(lambda fenced: self._review())

    async def campaign(self, lease: int) -> None:
        """Stand for election with this lease (a new lease is a new candidacy)."""
        await self.membership.etcd.create(CONTROLLER + f"{lease:x}",
                                          self.membership.name, lease)

    def _candidates(self):
        return sorted(self.membership.under(CONTROLLER), key=lambda kv: kv.create_revision)

    def leader(self) -> str | None:
        """The controller's node name as the mirror shows it (None: no candidate)."""
        c = self._candidates()
        return c[0].value if c else None

    def epoch(self) -> int:
        """The controller's epoch: the create revision of its election key."""
        c = self._candidates()
        return c[0].create_revision if c else 0

    def is_controller(self) -> bool:
        m = self.membership
        c = self._candidates()
        return m.holds_lease() and bool(c) and c[0].key == CONTROLLER + f"{m.lease:x}"

    def _last_state(self, name: str) -> str | None:
        """The state a gone node's key said last: its value when the watch deleted it (the
        "leaving" put may have come in the same watch response as the delete, after the
        last review), else the registration the last review saw."""
        last = self.membership.departed.get(name)
        if last is not None:
            try:
                return json.loads(last).get("state")
            except (ValueError, AttributeError):
                pass
        return self.nodes[name].get("state")

    def _review(self) -> None:
        now = self.is_controller()
        nodes = self.membership.nodes()
        joined = sorted(set(nodes) - set(self.nodes))
        gone = sorted(set(self.nodes) - set(nodes))
        became = now and not self.active
        if now != self.active:
            self.active = now
            if now:
                log.info("node %s is the controller (epoch %d); live nodes: %s",
                         self.membership.name, self.epoch(), ", ".join(sorted(nodes)))
            else:
                log.warning("node %s is no longer the controller", self.membership.name)
            for cb in list(self.on_role):
                cb(now)
        if now:
            for name in [] if became else joined:   # on election the list above says them
                log.info("controller: node %s joined", name)
            for name in gone:       # on election too: the old controller's loss, typically
                if self._last_state(name) == "leaving":
                    log.info("controller: node %s left", name)
                else:
                    log.warning("controller: node %s was lost (its lease expired)", name)
        # kept on every node, so a newly elected controller knows what it took over from
        self.nodes = nodes
        self.membership.departed.clear()
        if now and (joined or gone):
            for cb in list(self.on_nodes):
                cb(joined, gone)
