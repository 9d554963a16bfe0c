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

import asyncio
import logging

from .. import contract as c
from .. import errors
from ..frontend.exchange import PartitionedExchange
from ..groups.coordinator import (Assign, ConsumerGroup, InstanceIdInUse, UnknownMember,
                                  member_key)
from .topics import partition_name

log = logging.getLogger("amqpbroker.groups")

# a management call waits at most this long for a worker's offsets (one restarting is skipped)
WORKER_ANSWER_TIMEOUT = 2.0


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

    def topic_grew(self, vhost: str, topic: str) -> None:
        """Partitions were added: the groups on the topic spread them over their members."""
        n = len(self.partitions(vhost, topic))
        now = self.loop.time()
        for key, g in list(self.groups.items()):
            if key[0] == vhost and key[1] == topic and n > len(g.cg.partitions):
                self._run(g, g.cg.set_partitions(range(n), now))

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

    # ------------------------------------------------------------ management API
    def _partition_map(self, vh) -> dict:
        """{stream QueueRef: (topic or stream name, partition)} of a vhost."""
        out = {}
        for ex in vh.exchanges.values():
            if isinstance(ex, PartitionedExchange):
                for i in range(ex.partitions):
                    ref = vh.queues.get(partition_name(ex.name, i))
                    if ref is not None and ref.is_stream:
                        out[ref] = (ex.name, i)
        for ref in vh.queues.values():
            if ref.is_stream and ref not in out:
                out[ref] = (ref.name, 0)
        return out

    async def _offsets(self, refs) -> dict:
        """{QueueRef: {group: (committed, log start, log end)}}, one request per worker."""
        by_client: dict = {}
        for ref in refs:
            by_client.setdefault(ref.client, []).append(ref)

        async def ask(client, group):
            try:
                answer = await asyncio.wait_for(
                    client.request(c.GroupOffsets, qids=[r.qid for r in group]),
                    WORKER_ANSWER_TIMEOUT)
            except (errors.AMQPError, asyncio.TimeoutError):
                return {}                   # restarting, or too busy to say
            return {r: answer[r.qid] for r in group if r.qid in answer}
        out = {}
        for part in await asyncio.gather(*(ask(cl, g) for cl, g in by_client.items())):
            out.update(part)
        return out

    async def describe(self, vhosts, only: str | None = None) -> list[dict]:
        """The consumer groups of ``vhosts`` (``only``: that group), in the API's shape:
        members and assignment from the coordinators here, committed offsets and lag from
        the partitions' workers (so a group with no member is listed with its lag)."""
        out: dict[tuple, dict] = {}

        def entry(vhost: str, group: str) -> dict:
            e = out.get((vhost, group))
            if e is None:
                e = out[(vhost, group)] = {"vhost": vhost, "name": group, "topics": [],
                                           "state": "empty", "members": [], "lag": 0,
                                           "partitions": {}}
            return e

        for vhost in vhosts:
            vh = self.owner.vhosts.get(vhost)
            if vh is None:
                continue
            where = self._partition_map(vh)
            for ref, offsets in (await self._offsets(list(where))).items():
                topic, p = where[ref]
                for group, (committed, start, end) in offsets.items():
                    if only is not None and group != only:
                        continue
                    e = entry(vhost, group)
                    e["partitions"][(topic, p)] = {
                        "topic": topic, "partition": p, "member": None,
                        "committed_offset": committed, "log_start_offset": start,
                        "log_end_offset": end, "lag": max(0, end - committed)}
            for (gv, topic, group), g in list(self.groups.items()):
                if gv != vhost or (only is not None and group != only):
                    continue
                if g.cg.is_empty() and not self.partitions(gv, topic):
                    self.forget(gv, topic)      # the topic or stream was deleted
                    continue
                e = entry(vhost, group)
                self._describe_live(e, g, topic)
        result = []
        for e in out.values():
            parts = sorted(e["partitions"].values(), key=lambda x: (x["topic"], x["partition"]))
            e["partitions"] = parts
            e["topics"] = sorted({x["topic"] for x in parts} | set(e["topics"]))
            e["lag"] = sum(x["lag"] for x in parts if x["lag"] is not None)
            result.append(e)
        return sorted(result, key=lambda e: (e["vhost"], e["name"]))

    def _describe_live(self, e: dict, g: _Group, topic: str) -> None:
        cg = g.cg
        if topic not in e["topics"]:
            e["topics"].append(topic)
        delivering = cg.delivering()
        members = cg.members()
        for mid, instance_id in members.items():
            e["members"].append({
                "member_id": mid, "connection": g.connections.get(mid), "topic": topic,
                "instance_id": instance_id,
                "assignment": [{"topic": topic, "partition": p}
                               for p, (owner, _) in sorted(delivering.items())
                               if owner == mid]})
        for p in cg.partitions:
            part = e["partitions"].get((topic, p))
            if part is None:
                part = e["partitions"][(topic, p)] = {
                    "topic": topic, "partition": p, "member": None, "committed_offset": None,
                    "log_start_offset": None, "log_end_offset": None, "lag": None}
            if p in delivering:
                part["member"] = delivering[p][0]
        connected = {member_key(mid, iid) for mid, iid in members.items()}
        waiting = [p for p in cg.partitions
                   if p not in delivering and cg.target.get(p) in connected]
        if cg.revoking() or waiting:
            e["state"] = "rebalancing"
        elif members and e["state"] == "empty":
            e["state"] = "stable"

    async def reset(self, vhost: str, group: str, topic: str, to) -> list[dict]:
        """Set the group's committed offsets on every partition of ``topic`` (no member:
        ``GroupsBusy`` otherwise)."""
        g = self.groups.get((vhost, topic, group))
        if g is not None and not g.cg.is_empty():
            raise GroupBusy(f"consumer group '{group}' has members on '{topic}' in vhost "
                            f"'{vhost}': offsets can be reset only while it has none")
        refs = self.partitions(vhost, topic)
        out = []
        for p, ref in enumerate(refs):
            offset = await ref.client.request(c.GroupReset, qid=ref.qid, group=group, to=to)
            out.append({"topic": topic, "partition": p, "committed_offset": offset})
        log.info("consumer group '%s' in vhost '%s': offsets on '%s' reset to %r", group,
                 vhost, topic, to)
        return out


class GroupBusy(Exception):
    """An offset reset while the group has members."""
