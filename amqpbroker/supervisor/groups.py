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

In a cluster (docs/CLUSTER.md "One coordinator per consumer group") a group has one
coordinator, Kafka's way: the node leading the topic's partition 0 (a stream: the stream),
which every node reads from its etcd mirror and whose ``QueueRef`` of that partition already
points at it. Only that node keeps the ``ConsumerGroup``. Every node keeps its own members
(``here``: those whose front-end is on this node) and joins them at the coordinator: its own
``join`` when it is this node, else ``JoinGroup`` / ``LeaveGroup`` on the partition's
``RemoteClient`` (its link to the leader), which the coordinator's forwarder hands to
``remote_join`` / ``remote_leave``. The coordinator sends ``GroupAssign`` / ``GroupRevoke``
to the partitions' leaders as it does on one node, whichever node a member is on: the
leader's worker holds every member's share (by member id) and starts or stops the one named.
A link from a member's node that breaks (the node died) leaves its members (not for good).

When partition 0's leader changes (the coordinator's node died, was fenced, or handed the
leadership back), ``follow_coordinators`` (after every change of the etcd mirror, and when a
link comes back) drops the group where this node no longer coordinates it and joins this
node's members at the new coordinator, which rebuilds the group from the members that come
and the commits that live with the partitions. Its epochs start at its *term* (the
partition's leader epoch) << 32, above every epoch its predecessor gave out, so a worker
ignores what the former coordinator still had in flight (``worker/groups.py``). Before its
first assignment it asks the partitions' leaders who reads each partition now and which
members have a live share (``GroupOwners``, ``_adopt``), and keeps each partition with its
reader when that one joins again (``ConsumerGroup.take_over`` / ``adopt``): a coordinator
change moves nothing.
"""
from __future__ import annotations

import asyncio
import functools
import logging

from .. import contract as c
from .. import errors
from ..frontend.exchange import PartitionedExchange
from ..frontend.partition_client import HostGone
from ..groups.coordinator import (Assign, ConsumerGroup, InstanceIdInUse, UnknownMember,
                                  member_key)
from .topics import partition_name

log = logging.getLogger("amqpbroker.groups")

# a management call waits at most this long for a worker's offsets (one restarting is skipped)
WORKER_ANSWER_TIMEOUT = 2.0
# a join refused by a node that does not coordinate the group (yet) is sent again after
# RETRY, to the node leading partition 0 then, for up to COORDINATOR_WAIT
RETRY = 0.2
COORDINATOR_WAIT = 10.0
# a coordinator that made a group in a cluster keeps each partition for the member reading it
# (the workers say who) until that member joins again, for up to REJOIN_WAIT: as long as a
# member's node tries to join it (COORDINATOR_WAIT)
REJOIN_WAIT = COORDINATOR_WAIT
NOT_COORDINATOR = "NOT_COORDINATOR"


class _Group:
    __slots__ = ("key", "cg", "timer", "connections", "clients")

    def __init__(self, key, cg):
        self.key = key                  # (vhost, topic, group)
        self.cg = cg
        self.timer = None
        self.connections: dict[str, str] = {}   # member id -> its connection's name
        self.clients: dict[int, object] = {}    # partition -> the client its last action
        #                                         went to (a cluster: its leader's)


class Groups:
    def __init__(self, owner):
        self.owner = owner
        self.loop = owner.loop
        self.groups: dict[tuple, _Group] = {}
        cfg = owner.config
        self.revoke_grace = cfg.group_revoke_grace_ms / 1000
        self.session_timeout = cfg.group_session_timeout_ms / 1000
        # this node's own members: key -> {member id: (instance id, connection)}
        self.here: dict[tuple, dict[str, tuple]] = {}
        # key -> where this node's members were last joined: None (here), or (client, link)
        self.joined_at: dict[tuple, tuple | None] = {}
        # a cluster: the members other nodes joined here, by the link they came on
        self.from_links: dict[object, set] = {}
        # a cluster: the leader epoch of a partition queue (vhost, name): a coordinator's term
        self.term_of = None
        self._follow_later = None

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

    # ------------------------------------------------------------ coordinators
    @staticmethod
    def coordinator_of(refs):
        """The client of the node coordinating a group on partitions ``refs``: the
        ``RemoteClient`` of partition 0's leader, or None when it is this node (always on
        one node)."""
        client = refs[0].client if refs else None
        return client if client is not None and client.remote else None

    def _join_message(self, key, member: str):
        instance_id, connection = self.here[key][member]
        return dict(vhost=key[0], topic=key[1], group=key[2], member=member,
                    instance_id=instance_id, connection=connection)

    # ------------------------------------------------------------ inputs: this node's members
    async def join(self, vhost: str, topic: str, group: str, member: str, instance_id,
                   connection: str = "") -> None:
        """A member of this node joins, at the group's coordinator (see the module doc)."""
        key = (vhost, topic, group)
        self.here.setdefault(key, {})[member] = (instance_id, connection)
        try:
            deadline = self.loop.time() + COORDINATOR_WAIT
            while member in self.here.get(key, ()):    # (not left meanwhile)
                remote = self.coordinator_of(self.partitions(vhost, topic))
                if remote is None:
                    self.join_here(vhost, topic, group, member, instance_id, connection)
                    self.joined_at.setdefault(key, None)
                    return
                try:
                    await remote.request(c.JoinGroup, **self._join_message(key, member))
                except errors.AMQPError as exc:
                    gone = isinstance(exc, HostGone)
                    if not gone and NOT_COORDINATOR not in exc.text:
                        raise
                    if gone or self.loop.time() > deadline:
                        self._join_later(key, member, exc)
                        return
                else:
                    self.joined_at.setdefault(key, (remote, remote.link))
                    return
                await asyncio.sleep(RETRY)
        except BaseException:
            self._forget_here(key, member)
            raise

    def _join_later(self, key, member: str, exc) -> None:
        """No coordinator answers now (partition 0's leader unreachable, or being elected):
        the member's consume is accepted and it joins once one does (Kafka's consumer
        retries COORDINATOR_NOT_AVAILABLE): ``follow_coordinators`` joins this node's
        members after the next change of the etcd mirror or link back, and tries again
        every RETRY while the coordinator refuses."""
        log.info("consumer group '%s' on '%s' in vhost '%s': %s joins once a coordinator "
                 "answers (%s)", key[2], key[1], key[0], member, exc)
        self.joined_at.pop(key, None)
        if self._follow_later is None:
            self._follow_later = self.loop.call_later(RETRY, self._follow_again)

    def leave(self, vhost: str, topic: str, group: str, member: str, permanent: bool) -> None:
        """A member of this node leaves, at the group's coordinator."""
        key = (vhost, topic, group)
        self._forget_here(key, member)
        remote = self.coordinator_of(self.partitions(vhost, topic))
        if remote is None:
            self.leave_here(vhost, topic, group, member, permanent)
        elif remote.link is not None:
            remote.send(c.LeaveGroup(vhost=vhost, topic=topic, group=group, member=member,
                                     permanent=permanent))

    def _forget_here(self, key, member: str) -> None:
        members = self.here.get(key)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self.here[key]
                self.joined_at.pop(key, None)

    def frontend_gone(self, prefix: str) -> None:
        """A front-end process died: its members left (its connections are lost)."""
        for key, members in list(self.here.items()):
            for member in [mid for mid in members if mid.startswith(prefix)]:
                self.leave(*key, member, permanent=False)

    # ------------------------------------------------------------ inputs: another node's
    def remote_join(self, link, m: c.JoinGroup) -> None:
        """Another node's member joins over ``link``: here if this node coordinates the group
        (404 NOT_COORDINATOR otherwise: that node tries again)."""
        refs = self.partitions(m.vhost, m.topic)
        if not refs or self.coordinator_of(refs) is not None:
            raise errors.NotFound(
                f"{NOT_COORDINATOR} - consumer group '{m.group}' on '{m.topic}' in vhost "
                f"'{m.vhost}' is not coordinated by this node", 60, 20)
        self.join_here(m.vhost, m.topic, m.group, m.member, m.instance_id, m.connection)
        self.from_links.setdefault(link, set()).add(((m.vhost, m.topic, m.group), m.member))

    def remote_leave(self, link, m: c.LeaveGroup) -> None:
        self.from_links.get(link, set()).discard(((m.vhost, m.topic, m.group), m.member))
        self.leave_here(m.vhost, m.topic, m.group, m.member, m.permanent)

    def link_lost(self, link) -> None:
        """The link of another node is gone (the node died, or will join them again): its
        members leave, not for good (static members keep their partitions reserved)."""
        for key, member in self.from_links.pop(link, ()):
            self.leave_here(*key, member, permanent=False)

    # ------------------------------------------------------------ a new coordinator
    def follow_coordinators(self, *_) -> None:
        """After a change of the etcd mirror (or a link back): drop the groups this node no
        longer coordinates, and join this node's members at their group's coordinator
        wherever it moved (see the module doc)."""
        try:
            self._follow()
        except Exception:           # a bug must not stop the node following etcd
            log.exception("consumer groups: following their coordinators")

    def _follow(self) -> None:
        for key, g in list(self.groups.items()):
            refs = self.partitions(key[0], key[1])
            if refs and self.coordinator_of(refs) is None:
                self._leaders_moved(g, refs)
                continue
            if refs:
                del self.groups[key]
                if g.timer is not None:
                    g.timer.cancel()
                for entries in self.from_links.values():
                    for entry in [e for e in entries if e[0] == key]:
                        entries.discard(entry)
                log.info("consumer group '%s' on '%s' in vhost '%s': coordinated by node %s "
                         "now", key[2], key[1], key[0], self.coordinator_of(refs).node)
        for key, members in list(self.here.items()):
            remote = self.coordinator_of(self.partitions(key[0], key[1]))
            at = None if remote is None else (remote, remote.link)
            if key in self.joined_at and self.joined_at[key] == at:
                continue
            self.joined_at[key] = at
            log.info("consumer group '%s' on '%s' in vhost '%s': %d member(s) of this node "
                     "join at %s", key[2], key[1], key[0], len(members),
                     "this node" if remote is None else f"node {remote.node}")
            for member, (instance_id, connection) in list(members.items()):
                if remote is None:
                    try:
                        self.join_here(*key, member, instance_id, connection)
                    except errors.AMQPError as exc:
                        log.warning("consumer group %s: %s could not join again: %s", key,
                                    member, exc)
                elif remote.link is not None:
                    fut = remote.request(c.JoinGroup, **self._join_message(key, member))
                    fut.add_done_callback(functools.partial(self._joined_again, key))

    def _leaders_moved(self, g: _Group, refs) -> None:
        """Partitions of a group coordinated here whose leader changed since the group's
        last action on them: the new leader's worker is told the owner (the same Assign
        again: the member's share followed the partition, ``Forwarder.move``), and a
        revocation in progress on the old leader is complete (nothing delivered there can
        be settled any more: the member's channel voids those deliveries)."""
        actions = []
        for p, (member, epoch) in g.cg.delivering().items():
            if p < len(refs) and g.clients.get(p, refs[p].client) is not refs[p].client:
                self._send(g, refs, Assign(p, member, epoch))
        for p, (member, epoch, _) in g.cg.revoking().items():
            if p < len(refs) and g.clients.get(p, refs[p].client) is not refs[p].client:
                g.clients[p] = refs[p].client
                actions += g.cg.revoked(member, p, epoch)
        if actions:
            self._run(g, actions)

    async def _adopt(self, g: _Group, refs) -> None:
        """Ask the partitions' leaders which member reads each partition now (a former
        coordinator's assignment, or none) and which members have a live share there, and
        hold each partition for its reader until it joins here again, the others until
        every such member did (``ConsumerGroup.adopt``). A leader that does not answer
        names none."""
        # (longer than the API's wait: a leader too busy to say in time would let the
        # first member to join take every partition, as before this step)
        answers = await _per_worker(refs, c.GroupOwners, timeout=REJOIN_WAIT / 2,
                                    group=g.key[2])
        owners: dict[int, str] = {}
        members: set[str] = set()
        for p, ref in enumerate(refs):
            there = answers.get(ref)
            if there is not None:
                if there["owner"]:
                    owners[p] = there["owner"][0]
                members.update(there["members"])
        if self.groups.get(g.key) is not g:
            return
        if owners:
            log.info("consumer group '%s' on '%s' in vhost '%s': taken over with %d "
                     "partition(s) read, kept for their members; waiting for %d member(s)",
                     g.key[2], g.key[1], g.key[0], len(owners), len(members))
        self._run(g, g.cg.adopt(owners, members, self.loop.time()))

    def _joined_again(self, key, fut) -> None:
        """A join sent to a new coordinator failed (it does not coordinate yet, or its link
        broke): try again shortly, while this node has members of the group."""
        if fut.cancelled() or fut.exception() is None:
            return
        exc = fut.exception()
        if isinstance(exc, errors.AMQPError) and NOT_COORDINATOR not in exc.text \
                and not isinstance(exc, HostGone):
            log.warning("consumer group %s: a member could not join again: %s", key, exc)
            return
        log.info("consumer group %s: joining again shortly (%s)", key, exc)
        self.joined_at.pop(key, None)
        if self._follow_later is None:
            self._follow_later = self.loop.call_later(RETRY, self._follow_again)

    def _follow_again(self) -> None:
        self._follow_later = None
        self.follow_coordinators()

    # ------------------------------------------------------------ the coordinator's inputs
    def join_here(self, vhost: str, topic: str, group: str, member: str, instance_id,
                  connection: str = "") -> None:
        refs = self.partitions(vhost, topic)
        key = (vhost, topic, group)
        g = self.groups.get(key)
        now = self.loop.time()
        actions = []
        if g is None:
            term = self.term_of(vhost, refs[0].name) if self.term_of and refs else 0
            g = self.groups[key] = _Group(key, ConsumerGroup(
                group, range(len(refs)), revoke_grace=self.revoke_grace,
                session_timeout=self.session_timeout, first_epoch=term << 32))
            if self.term_of is not None and refs:
                # a cluster: another coordinator may have had the group (partition 0's
                # leader moved), its members' shares still reading: keep what each reads
                g.cg.take_over(now + REJOIN_WAIT)
                self.loop.create_task(self._adopt(g, refs))
        elif member in g.connections:
            return                      # joined again by its node (a new coordinator, a link)
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

    def leave_here(self, vhost: str, topic: str, group: str, member: str,
                   permanent: bool) -> None:
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

    def worker_back(self, client) -> None:
        """A restarted worker, or in a cluster a link back to another node (``on_link``: the
        node may have restarted, its worker's group state gone with it): re-send the
        assignments of its partitions (one it still has is the same again: nothing
        changes), and complete the revocations it had in progress."""
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
        g.clients[action.partition] = ref.client
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
        return await _per_worker(refs, c.GroupOffsets)

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
            # groups another node coordinates: their live part from it (a cluster)
            elsewhere = {(k[1], k[2]) for k in self.here if k[0] == vhost}
            for e in list(out.values()):
                if e["vhost"] == vhost:
                    elsewhere.update((topic, e["name"]) for topic, _ in e["partitions"])
            asked = sorted((topic, group) for topic, group in elsewhere
                           if (only is None or group == only)
                           and (vhost, topic, group) not in self.groups)
            answers = await asyncio.gather(*(self._describe_remote(vhost, topic, group)
                                             for topic, group in asked))
            for (topic, group), live in zip(asked, answers):
                if live is not None:
                    _merge_live(entry(vhost, group), live)
        result = []
        for e in out.values():
            parts = sorted(e["partitions"].values(), key=lambda x: (x["topic"], x["partition"]))
            e["partitions"] = parts
            e["topics"] = sorted({x["topic"] for x in parts} | set(e["topics"]))
            e["lag"] = sum(x["lag"] for x in parts if x["lag"] is not None)
            result.append(e)
        return sorted(result, key=lambda e: (e["vhost"], e["name"]))

    async def _describe_remote(self, vhost: str, topic: str, group: str) -> dict | None:
        """The live part of a group another node coordinates (``describe_here`` there)."""
        remote = self.coordinator_of(self.partitions(vhost, topic))
        if remote is None:
            return None
        try:
            return await asyncio.wait_for(remote.request(
                c.GroupDescribe, vhost=vhost, topic=topic, group=group), WORKER_ANSWER_TIMEOUT)
        except (errors.AMQPError, asyncio.TimeoutError):
            return None                 # unreachable, or too busy to say

    def describe_here(self, vhost: str, topic: str, group: str) -> dict | None:
        """The live part of a group this node coordinates, for another node's API (None: it
        does not): members, assignment, state, and whether it is empty."""
        g = self.groups.get((vhost, topic, group))
        if g is None:
            return None
        e = {"topics": [], "members": [], "partitions": {}, "state": "empty",
             "empty": g.cg.is_empty()}
        self._describe_live(e, g, topic)
        return e

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
        live = None if g is not None else await self._describe_remote(vhost, topic, group)
        if g is not None and not g.cg.is_empty() or live is not None and not live["empty"]:
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


async def _per_worker(refs, cls, timeout: float = WORKER_ANSWER_TIMEOUT, **fields) -> dict:
    """{QueueRef: its answer} of request ``cls`` (``qids`` and ``fields``) sent once to each
    worker (a cluster: each leader's) hosting some of ``refs``; a worker that does not
    answer within ``timeout`` (restarting, unreachable, too busy) names none."""
    by_client: dict = {}
    for ref in refs:
        by_client.setdefault(ref.client, []).append(ref)

    async def ask(client, group):
        try:
            answer = await asyncio.wait_for(
                client.request(cls, qids=[r.qid for r in group], **fields), timeout)
        except (errors.AMQPError, asyncio.TimeoutError):
            return {}
        return {r: answer[r.qid] for r in group if r.qid in answer}
    out = {}
    for part in await asyncio.gather(*(ask(cl, g) for cl, g in by_client.items())):
        out.update(part)
    return out


def _merge_live(e: dict, live: dict) -> None:
    """Add the live part of a group (``describe_here`` on its coordinator) to entry ``e``."""
    e["members"] += live["members"]
    e["topics"] = sorted(set(e["topics"]) | set(live["topics"]))
    for where, part in live["partitions"].items():
        mine = e["partitions"].get(where)
        if mine is None:
            e["partitions"][where] = part
        else:
            mine["member"] = part["member"]
    if live["state"] == "rebalancing" or live["state"] == "stable" and e["state"] == "empty":
        e["state"] = live["state"]


class GroupBusy(Exception):
    """An offset reset while the group has members."""
