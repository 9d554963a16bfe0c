"""The broker as a front-end sees it: vhosts, users, sessions, alarms, and the partition
clients that reach the queues.

Two roles share this class's parts (see ``supervisor/owner.py``):

* ``Broker`` — a front-end process's *copy* of the metadata. It never changes metadata
  itself: channels ask ``self.metadata`` (``frontend/metadata_copy.RemoteMetadata``) and the
  supervisor's ops keep the copy current (``metadata_copy.apply_op``). Nothing is persisted.
* ``supervisor.owner.MetadataOwner`` — the supervisor's (or the only process's): it owns the
  metadata, persists it, places queues on workers and tells front-ends of every change.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections import deque

from .. import contract as c
from .. import errors
from ..config import Config
from ..protocol import properties as props_mod
from ..stats import FrontendStats
from .alarms import Alarms
from .dead_letter_confirms import DeadLetterConfirms
from .events import INTERNAL_USER, emit_metadata, exchange_details
from .auth import Users
from .oauth2 import OAuth2, backends
from .exchange import delay_of, with_hash_property
from .vhost import VirtualHost

log = logging.getLogger("amqpbroker.broker")
# the cluster name until one is set (``PUT /api/cluster-name``)
DEFAULT_CLUSTER_NAME = f"amqpbroker@{socket.gethostname()}"


def worker_of(vhost: str, name: str, workers: int) -> int:
    """The index of the worker that owns queue ``name`` on a node with ``workers`` of them
    (stable by name; another node's forwarder computes it from that node's count)."""
    digest = hashlib.sha1(f"{vhost}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % max(workers, 1)


# seconds a policy change waits for each host of its vhost's queues to have applied it
POLICY_ROUND_TRIP = 10.0


class Broker:
    def __init__(self, config: Config, loop, metadata=None):
        self.config = config
        self.loop = loop
        self.users = Users(OAuth2.from_config(config), backends(config))
        self.vhosts: dict[str, VirtualHost] = {}
        self.sessions: set = set()
        # cluster/forward.py's Forwarder in a cluster (the supervisor's, or a front-end's)
        self.forwarder = None
        # while a session handles a read: the other sessions it gave output to (a delivery),
        # written when that read is handled rather than at the end of the loop turn
        self.written_to: list | None = None
        self.cache_used = 0
        self.alarms = Alarms(self)
        self.partitions: list = []          # PartitionClient per worker
        self.metadata = metadata            # how channels change metadata
        self.admission = None               # how sessions are counted (frontend/admission.py)
        self.forward_reply = None           # direct reply-to for another front-end's connection
        # (vhost, exchange, keys, record, reason, source of a held one or None)
        self._dead_letters: deque = deque()
        self._routing_dead_letters = False
        self._logged_once: set = set()      # dead-letter warnings said already (_first_time)
        self.dead_letter_confirms = DeadLetterConfirms()        # at-least-once ones
        self.stats = FrontendStats(config)      # counters of this process (amqpbroker/stats)
        # RabbitMQ's global runtime parameters: ``cluster_name`` (set through the management
        # API), and any other a user stores there
        self.global_parameters: dict = {}
        # the event exchange (events.py): the user making the metadata change being made
        # now, and whether changes applied now were made elsewhere (a cluster's etcd)
        self.actor = INTERNAL_USER
        self.events_quiet = False

    owns_metadata = False           # the metadata owner's (supervisor/owner.py): True

    @property
    def cluster_name(self) -> str:
        """What connection.start, ``/api/overview`` and the metrics call this broker."""
        return self.global_parameters.get("cluster_name") or DEFAULT_CLUSTER_NAME

    def handle_events(self, client, events) -> None:
        """A batch of a host's events read from a ring link (``client.on_events``); what it
        gave the sessions (deliveries) is written once it is handled, as a read's output is
        (``Session._process``), not at the end of the loop turn: a lone message's delivery
        leaves in the wake-up that brought it."""
        if self.written_to is not None:
            client.on_events(events)
            return
        self.written_to = written_to = []
        try:
            client.on_events(events)
        finally:
            self.written_to = None
            for session in written_to:
                if session._flush_scheduled:    # nothing else flushes it (schedule_flush)
                    session.flush()

    # ------------------------------------------------------------ hooks of the owner
    def changed(self, op) -> None:
        """Metadata changed: a copy has nobody to tell."""

    def persist(self) -> None:
        """Durable metadata changed: a copy does not persist."""

    def alarm_changed(self, name: str, detail) -> None:
        """An alarm was set or cleared here: a copy has nobody to tell."""

    def history_bound(self, vh, ex, destination) -> None:
        """A new binding to an x-recent-history exchange: the owner sends its history."""

    def child_pids(self) -> list[int]:
        return []

    def topic_grew(self, vh, ex) -> None:
        """Partitions were added to a topic: consumer group members here consume them."""
        from .group_member import topic_grew
        from .partition_client import WINDOW
        topic_grew(self, vh, ex, WINDOW)

    def group_revoked(self, client, m) -> None:
        """A worker finished revoking a group's partition: the owner's groups act on it;
        only the supervisor's link carries these."""

    def drop_queue_of_deleted_vhost(self, vh: VirtualHost, q) -> None:
        vh.forget_queue(q, "vhost deleted")     # the supervisor deletes it

    # ------------------------------------------------------------ vhosts
    def add_vhost(self, name: str, description: str = "", tags=(),
                  default_queue_type: str | None = None) -> VirtualHost:
        """The vhost ``name``, made with these settings if it does not exist."""
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(self, name, description, tags, default_queue_type)
            self.vhosts[name] = vh
            self.changed(vh.op())
            self.persist()
            for ex in vh.exchanges.values():        # its predeclared ones, as RabbitMQ's
                emit_metadata(self, "exchange.created", exchange_details(name, ex))
            emit_metadata(self, "vhost.created", {
                "name": name, "description": description, "tags": list(tags),
                "default_queue_type": default_queue_type or "undefined", "tracing": False})
        return vh

    def update_vhost(self, name: str, description: str, tags,
                     default_queue_type: str | None) -> bool:
        """Make vhost ``name`` or change its settings (the management API's PUT, a definitions
        import, etcd's copy in a cluster); True when it was made."""
        vh = self.vhosts.get(name)
        if vh is None:
            self.add_vhost(name, description, tags, default_queue_type)
            return True
        settings = (description, list(tags), default_queue_type)
        if (vh.description, vh.tags, vh.default_queue_type) != settings:
            vh.description, vh.tags, vh.default_queue_type = settings
            self.changed(vh.op())
            self.persist()
        return False

    # ------------------------------------------------------------ policies
    def set_policy(self, policy) -> bool:
        """Set a vhost's policy or operator policy (policies.Policy; the vhost exists); its
        queues take their new arguments at once. True when the policy was made."""
        vh = self.vhosts[policy.vhost]
        table = vh.operator_policies if policy.operator else vh.policies
        old = table.get(policy.name)
        if old == policy:
            return False
        table[policy.name] = policy
        self.changed(c.PolicyOp(vhost=vh.name, name=policy.name, item=policy.item(),
                                operator=policy.operator))
        self.persist()
        self._policies_changed(vh)
        item = policy.item()
        emit_metadata(self, "policy.set", {
            "name": policy.name, "vhost": vh.name, "pattern": item.get("pattern"),
            "apply-to": item.get("apply-to"), "definition": item.get("definition"),
            "priority": item.get("priority")})
        return old is None

    def delete_policy(self, vhost: str, name: str, operator: bool = False) -> bool:
        vh = self.vhosts.get(vhost)
        table = None if vh is None else vh.operator_policies if operator else vh.policies
        if table is None or table.pop(name, None) is None:
            return False
        self.changed(c.PolicyDeleted(vhost=vhost, name=name, operator=operator))
        self.persist()
        self._policies_changed(vh)
        emit_metadata(self, "policy.cleared", {"name": name, "vhost": vhost})
        return True

    def _policies_changed(self, vh: VirtualHost) -> None:
        for q in list(vh.queues.values()):
            q.apply_policy()
        for ex in list(vh.exchanges.values()):
            if ex.name and vh.choose_exchange_policy(ex):
                self.changed(vh.exchange_op(ex))        # front-ends route by it too

    async def policies_applied(self, vhost: str) -> None:
        """Return once every host of the vhost's queues has applied what a policy change
        sent it (a round trip behind it on each link), so a client told the change is done
        publishes under it."""
        vh = self.vhosts.get(vhost)
        clients = {client for q in vh.queues.values() for client, _ in q.local_hosts()} \
            if vh is not None else ()
        for client in clients:
            try:
                await asyncio.wait_for(client.request(c.Stats, qids=[]), POLICY_ROUND_TRIP)
            except (errors.AMQPError, asyncio.TimeoutError):
                pass    # gone or restarting (HostGone: it opens with the new ones), or cut off

    def delete_vhost(self, name: str) -> bool:
        vh = self.vhosts.pop(name, None)
        if vh is None:
            return False
        for s in list(self.sessions):
            if s.vhost is vh:
                s.force_close(f"vhost '{name}' is deleted")
        for q in list(vh.queues.values()):
            self.drop_queue_of_deleted_vhost(vh, q)
        for ex in vh.exchanges.values():
            emit_metadata(self, "exchange.deleted", {"name": ex.name, "vhost": name})
        vh.close()
        self.users.forget_vhost(name)
        self.changed(c.VhostDeleted(name=name))
        emit_metadata(self, "vhost.deleted", {"name": name})
        self.persist()
        return True

    # ------------------------------------------------------------ partitions
    # No ``place`` here: only the metadata owner (supervisor/owner.py) places a queue on a
    # worker, knowing the topics (a topic's partitions go round the workers from the
    # topic's place, not where their own names hash). A front-end takes the worker (and
    # qid) the owner chose from its ``QueueOp`` (metadata_copy.py); its forwarder moves a
    # queue back only to the copy it left open (cluster/forward.py ``local_client``).

    async def queue_stats(self, refs) -> dict:
        """QueueRef -> (ready, consumers, unacked, ready bytes, memory), one request per
        host."""
        by_client: dict = {}
        for ref in refs:
            by_client.setdefault(ref.client, []).append(ref)
        out = {}
        for client, group in by_client.items():
            try:
                stats = await client.request(c.Stats, qids=[r.qid for r in group])
            except errors.AMQPError:
                stats = {}          # the worker is restarting
            for r in group:
                out[r] = stats.get(r.qid, (0, 0, 0, 0, 0))
        return out

    # ------------------------------------------------------------ dead letters
    def route_dead_letter(self, vhost_name: str, exchange: str, keys, record,
                          reason: str, source=None) -> None:
        """A host dead-lettered ``record`` for ``reason``: route it through ``exchange`` as a
        publish, except into the queues where it would close a dead-letter cycle.
        ``source``: (client, qid, offset) of a message its queue holds until every copy is
        confirmed (at-least-once: dead_letter_confirms.py); it is told nothing when there
        is no route, and sends it again later.

        A loop, not a recursion: with the host in this process, a queue that dead-letters what
        it is given at once (TTL 0, full with reject-publish-dlx) calls back in here from
        inside ``ref.publish``; that dead letter waits in ``_dead_letters`` for the loop
        below, so a chain of any length runs in constant stack."""
        self._dead_letters.append((vhost_name, exchange, keys, record, reason, source))
        if self._routing_dead_letters:
            return
        self._routing_dead_letters = True
        try:
            while self._dead_letters:
                letter = self._dead_letters.popleft()
                try:
                    self._route_dead_letter(*letter)
                except Exception:
                    log.exception("dead letter from vhost '%s' to exchange '%s' not routed",
                                  letter[0], letter[1])
        finally:
            self._routing_dead_letters = False

    def _route_dead_letter(self, vhost_name: str, exchange: str, keys, record,
                           reason: str, source) -> None:
        vhost = self.vhosts.get(vhost_name)
        ex = vhost.exchanges.get(exchange) if vhost is not None else None
        if ex is None:
            if source is not None:
                self._warn_held(source, vhost_name, "missing", exchange,
                                "Cannot forward any dead-letter messages from source quorum "
                                "%s because its configured dead-letter-exchange %s does not "
                                "exist. Either create the configured dead-letter-exchange or "
                                "re-configure the dead-letter-exchange policy for the source "
                                "quorum queue to prevent dead-lettered messages from piling "
                                "up in the source quorum queue. This message will not be "
                                "logged again.", f"exchange '{exchange}' in vhost "
                                                 f"'{vhost_name}'")
            return
        raw = record.properties
        scan = props_mod.scan(raw)
        headers = headers_to_route(ex, raw, scan)
        priority = scan.priority or 0
        if ex.delays:                   # an x-delayed-message exchange holds it first
            delay = delay_of(headers)
            if delay is not None:
                self.hold_delayed(vhost_name, ex.name, keys, record, priority, delay, source)
                return
        # a rejection never closes a cycle: its history is not read
        deaths = death_history(raw) if scan.has_headers and reason != "rejected" else []
        track = source is not None
        tickets = []
        for ref in vhost.route(ex, keys, headers):
            if reason != "rejected" and is_dead_letter_cycle(ref.name, deaths):
                self._log_cycle(vhost_name, ref.name, deaths)
            else:
                tickets.append((ref.client, ref.publish(record, priority, track)))
        if not track:
            return
        if tickets:
            self.dead_letter_confirms.wait(tickets, source)
        else:
            self._warn_held(source, vhost_name, "no_route", (exchange, tuple(keys)),
                            "Cannot forward any dead-letter messages from source quorum %s "
                            "with configured dead-letter-exchange %s and routing keys %s. "
                            "This can happen either if the dead-letter routing topology is "
                            "misconfigured (for example no queue bound to dead-letter-exchange "
                            "or wrong dead-letter-routing-key configured) or if non-mirrored "
                            "classic queues are bound whose host node is down. Fix this issue "
                            "to prevent dead-lettered messages from piling up in the source "
                            "quorum queue. This message will not be logged again.",
                            f"exchange '{exchange}' in vhost '{vhost_name}'", list(keys))

    def _warn_held(self, source, vhost_name: str, kind: str, what, text: str, *args) -> None:
        """RabbitMQ's warnings of a held dead letter that cannot go: once per source queue
        and cause."""
        client, qid, _ = source
        ref = client.refs.get(qid)
        queue = f"queue '{ref.name}' in vhost '{vhost_name}'" if ref is not None \
            else f"a queue in vhost '{vhost_name}'"
        if self._first_time((vhost_name, queue, kind, what)):
            log.warning(text, queue, *args)

    def _first_time(self, key) -> bool:
        """Whether a warning keyed ``key`` was not logged yet (now it counts as logged). The
        memory is bounded: past 10,000 keys it starts again, so one may be logged again."""
        if key in self._logged_once:
            return False
        if len(self._logged_once) >= 10000:
            self._logged_once.clear()
        self._logged_once.add(key)
        return True

    def hold_delayed(self, vhost: str, exchange: str, keys, record, priority: int,
                     delay: int, source=None) -> None:
        """A dead letter into an x-delayed-message exchange: held by the metadata owner as a
        publish is (no publisher waits for it; a held dead letter is settled once it is
        held there)."""
        fut = asyncio.ensure_future(self.metadata.delay_message(
            vhost=vhost, exchange=exchange, keys=list(keys), record=record,
            priority=priority, delay=delay))

        def held(fut) -> None:
            if fut.cancelled():
                return
            if fut.exception() is not None:
                log.error("a dead letter for delayed exchange '%s' in vhost '%s' was not "
                          "held: %s", exchange, vhost, fut.exception())
            elif source is not None:
                source[0].send(c.DlxSettle(qid=source[1], offsets=[source[2]]))
        fut.add_done_callback(held)

    def _log_cycle(self, vhost_name: str, queue: str, deaths) -> None:
        """Once per cycle (as RabbitMQ, which logs each cycle once per process)."""
        queues = [queue, *(d[0] for d in deaths if d is not None)]
        if not self._first_time(("cycle", vhost_name, *queues)):
            return
        log.warning("Message dropped. Dead-letter queues cycle detected in vhost '%s': %s "
                    "(the queue it would enter, then where it died, most recent first). "
                    "This cycle will NOT be reported again.", vhost_name, queues)


def headers_to_route(ex, raw: bytes, scan=None) -> dict | None:
    """The headers a stored message (its property bytes ``raw``) is routed through ``ex``
    with: decoded only when the route may read them (a headers or delayed exchange, an
    exchange-to-exchange binding, an alternate exchange), with a consistent-hash exchange's
    property put in (``with_hash_property``)."""
    if ex.hash_property is not None:
        decoded = props_mod.decode(raw)
        return with_hash_property(ex, decoded.headers, decoded)
    if scan is None:
        scan = props_mod.scan(raw)
    if scan.has_headers and (ex.reads_headers or ex.e2e or ex.alternate is not None):
        return props_mod.decode(raw).headers
    return None


def death_history(raw: bytes) -> list:
    """(queue, reason) of each entry of a message's x-death header, most recent first (None
    for either that is not a string); None for an entry that is not a table. Read from the
    property bytes (``properties.x_death``), nothing decoded but those two."""
    return [(q, r) if wire[:1] == b"F" else None for q, r, wire in props_mod.x_death(raw)]


def is_dead_letter_cycle(queue: str, deaths) -> bool:
    """RabbitMQ's ``rabbit_dead_letter:is_cycle``: a message dead-lettered for a reason other
    than ``rejected`` (the caller checks that) closes a cycle at ``queue`` if it died there
    before and none of its deaths since, that one included, was a rejection: a cycle that
    only timers and limits drive would turn forever, one a client takes part in is the
    client's. An entry that is not a table breaks the cycle too (a client wrote it)."""
    for death in deaths:
        if death is None or death[1] == "rejected":
            return False
        if death[0] == queue:
            return True
    return False
