"""Consumer group coordination: the supervisor's half of groups/__init__.py's wiring plan.

Theory of operation
-------------------
One ``ConsumerGroup`` (groups/coordinator.py: membership, target assignment, epochs, timers)
per (vhost, topic or stream, group name), made at the first join. This module only carries
its inputs in and its actions out:

    join / leave      front-ends' ``JoinGroup`` / ``LeaveGroup`` (``LocalMetadata`` in this
                      process); a front-end process that dies leaves for all its members
                      (not permanently: static members keep their reservation)
    Assign / Revoke   sent as ``GroupAssign`` / ``GroupRevoke`` to the worker owning the
                      partition, over the supervisor's own partition link to it (in one
                      process: the local host)
    revoked           the worker's ``GroupRevoked`` (it arrives on that same link)
    tick              one loop timer per group, re-armed after every input at
                      ``group.deadline()`` (revocation grace, static session timeouts)

A partition is named to a worker by its queue id; the coordinator numbers partitions 0..N-1
(a stream is partition 0 of itself). When a topic has more partitions than the group knows
(it grew), ``set_partitions`` runs at the next join. A restarted worker lost its group state:
the assignments of partitions it owns are sent again (same member, same epoch) and its
revocations in progress count as complete — what a dead worker held cannot be delivered.

A group with no member stays known here (its state is ``empty``); its offsets live on the
partitions' workers (``worker/groups.py``), so its lag is reported even with no ConsumerGroup
in memory (after a restart). ``describe`` gives the management API its shape.
"""
from __future__ import annotations

import logging

from .. import contract as c
from .. import errors
from ..frontend.exchange import PartitionedExchange
from ..groups.coordinator import Assign, ConsumerGroup, InstanceIdInUse, UnknownMember
from .topics import partition_name

log = logging.getLogger("amqpbroker.groups")


class _Group:
    __slots__ = ("key", "cg", "timer", "connections")

    def __init__(self, key, cg):
        self.key = key                  # (vhost, topic, group)
        self.cg = cg
        self.timer = None
        self.connections: dict[str, str] = {}   # member id -> its connection's name


class Groups:
    def __init__(self, owner):
        self.owner = owner
        self.loop = owner.loop
        self.groups: dict[tuple, _Group] = {}
        cfg = owner.config
        self.revoke_grace = cfg.group_revoke_grace_ms / 1000
        self.session_timeout = cfg.group_session_timeout_ms / 1000

    # ------------------------------------------------------------ partitions
    def partitions(self, vhost: str, topic: str) -> list:
        """The partition queues of a topic (or [the stream]), in order."""
        vh = self.owner.vhosts.get(vhost)
        if vh is None:
            return []
        q = vh.queues.get(topic)
        if q is not None:
            return [q]
        ex = vh.exchanges.get(topic)
        if not isinstance(ex, PartitionedExchange):
            return []
        out = []
        for i in range(ex.partitions):
            ref = vh.queues.get(partition_name(topic, i))
            if ref is None:
                break
            out.append(ref)
        return out

    # ------------------------------------------------------------ inputs
    def join(self, vhost: str, topic: str, group: str, member: str, instance_id,
             connection: str = "") -> None:
        refs = self.partitions(vhost, topic)
        key = (vhost, topic, group)
        g = self.groups.get(key)
        now = self.loop.time()
        actions = []
        if g is None:
            g = self.groups[key] = _Group(key, ConsumerGroup(
                group, range(len(refs)), revoke_grace=self.revoke_grace,
                session_timeout=self.session_timeout))
        elif len(refs) > len(g.cg.partitions):
            actions += g.cg.set_partitions(range(len(refs)), now)
        try:
            actions += g.cg.join(member, instance_id, now)
        except InstanceIdInUse as exc:
            self._run(g, actions)
            raise errors.PreconditionFailed(
                f"x-group-instance-id '{instance_id}' is in use by a connected member of "
                f"consumer group '{group}' on '{topic}' in vhost '{vhost}'", 60, 20) from exc
        g.connections[member] = connection or member.split("/", 1)[0]
        log.info("consumer group '%s' on '%s' in vhost '%s': %s joined%s", group, topic, vhost,
                 member, f" as instance '{instance_id}'" if instance_id else "")
        self._run(g, actions)

    def leave(self, vhost: str, topic: str, group: str, member: str, permanent: bool) -> None:
        g = self.groups.get((vhost, topic, group))
        if g is None:
            return
        try:
            actions = g.cg.leave(member, self.loop.time(), permanent=permanent)
        except UnknownMember:
            return
        g.connections.pop(member, None)
        self._run(g, actions)

    def revoked(self, client, m: c.GroupRevoked) -> None:
        for g in list(self.groups.values()):
            if g.key[2] != m.group:
                continue
            for p, ref in enumerate(self.partitions(g.key[0], g.key[1])):
                if ref.qid == m.qid and ref.client is client:
                    self._run(g, g.cg.revoked(m.member, p, m.epoch))

    def frontend_gone(self, prefix: str) -> None:
        """A front-end process died: its members left (its connections are lost)."""
        for g in list(self.groups.values()):
            for member in [mid for mid in g.cg.members() if mid.startswith(prefix)]:
                self.leave(*g.key, member, permanent=False)

    def worker_back(self, client) -> None:
        """A restarted worker: re-send the assignments of its partitions, and complete the
        revocations it had in progress."""
        for g in list(self.groups.values()):
            refs = self.partitions(g.key[0], g.key[1])
            actions = []
            for p, (member, epoch) in g.cg.delivering().items():
                if p < len(refs) and refs[p].client is client:
                    self._send(g, refs, Assign(p, member, epoch))
            for p, (member, epoch, _) in g.cg.revoking().items():
                if p < len(refs) and refs[p].client is client:
                    actions += g.cg.revoked(member, p, epoch)
            self._run(g, actions)

    def forget(self, vhost: str, topic: str) -> None:
        """The topic or stream was deleted: its groups go (their offsets went with it)."""
        for key in [k for k in self.groups if k[0] == vhost and k[1] == topic]:
            g = self.groups.pop(key)
            if g.timer is not None:
                g.timer.cancel()

    # ------------------------------------------------------------ actions and timers
    def _run(self, g: _Group, actions) -> None:
        refs = self.partitions(g.key[0], g.key[1])
        for action in actions:
            self._send(g, refs, action)
        self._arm(g)

    def _send(self, g: _Group, refs, action) -> None:
        if action.partition >= len(refs):
            return
        ref = refs[action.partition]
        cls = c.GroupAssign if isinstance(action, Assign) else c.GroupRevoke
        log.debug("group %s: %s", g.key, action)
        ref.client.send(cls(qid=ref.qid, group=g.key[2], member=action.member,
                            epoch=action.epoch))
        # a worker that is restarting gets it from worker_back; a revoke it cannot answer
        # is complete (nothing of a dead worker's can be delivered)
        if ref.client.link is None and cls is c.GroupRevoke:
            self.loop.call_soon(self._revoked_now, g, action)

    def _revoked_now(self, g: _Group, action) -> None:
        if self.groups.get(g.key) is g:
            self._run(g, g.cg.revoked(action.member, action.partition, action.epoch))

    def _arm(self, g: _Group) -> None:
        if g.timer is not None:
            g.timer.cancel()
            g.timer = None
        deadline = g.cg.deadline()
        if deadline is not None:
            g.timer = self.loop.call_at(deadline, self._tick, g)

    def _tick(self, g: _Group) -> None:
        g.timer = None
        if self.groups.get(g.key) is g:
            self._run(g, g.cg.tick(self.loop.time()))

    # ------------------------------------------------------------ queries
    def state(self, vhost: str, topic: str, group: str) -> _Group | None:
        return self.groups.get((vhost, topic, group))

    def is_empty(self, vhost: str, group: str) -> bool:
        return all(g.cg.is_empty() for k, g in self.groups.items()
                   if k[0] == vhost and k[2] == group)
