"""Forwarding (issue 12 step 4): a client on any node uses any queue; the node forwards to
the node that leads the queue's partition over the cluster link, and back.

Two halves, one per end of a cluster link (``links/tcp.StreamEndpoint``: the contract's
messages, length-prefixed, the same codec as the rings):

* ``Forwarder`` (every node, in the supervisor): after each change of the etcd mirror it
  compares, for every queue whose keys the change touched (its partition's, its object's:
  ``queues_touched``), the partition's leader (``placement.py``) with where the node's
  ``QueueRef`` points; for every queue of the node's metadata after a fresh list of etcd
  (start, a broken watch), fencing, or a node that joined, left or changed its
  registration. (Every queue after every event cost 5-7 ms of CPU per event at 1,000
  queues: a node loss that moves hundreds of leaders, one etcd event at a time, was
  quadratic.) A queue led by another node
  is *moved* to a ``RemoteClient`` of that node (a ``PartitionClient`` whose link is a TCP
  stream to the leader's cluster port); a queue led by this node is moved back to the local
  partition client (``broker.place``). A queue not placed yet, or without a leader, stays
  where it is. So the place where a front-end chooses the link of a partition is one pass
  here, and the channel code does not know: it publishes, consumes, gets, purges and asks
  for stats through ``ref.client`` as before.
* ``ForwardedLink`` (the leader's end): a remote node's link attached to the local host
  (``host.attach``) as one more front-end link. qids are numbers of the node that chose
  them, so the link translates: the remote's ``Open(vhost, name)`` names the queue, and
  its qid is mapped onto the qid of this node's own ``QueueRef`` of that queue (the host
  has it open); events and replies that name qids are mapped back. cids and publish
  numbers are per link already and cross as they are.

Moving a queue (its leader changed, or it was placed after the declare) cancels its
consumers on this node with ``basic.cancel`` (clients with consumer-cancel-notify
resubscribe, and land on the new leader), requeues on the old host what they had unacked,
and voids their delivery tags (a ``RemoteClient``'s epoch is unique, so the channel's epoch
check drops an ack of a delivery from before the move). A broken link is a lost host
(``PartitionClient.host_lost``): in-flight publishes are nacked, requests fail with 404,
consumers are cancelled; the link is dialled again while the node is in the membership and
a queue still wants it, and every queue is opened again on the new link.

Process layouts (docs/CLUSTER.md "As built (layouts)"): a link goes to one worker of the
leader node, the one hosting the queues it opens (``NodeHello.worker``, computed by the
caller from the leader's ``workers`` count in its registration), so a ``RemoteClient`` is
one per (node, worker). Where the queues live in the supervisor (``--workers 0``) the
``ForwardedLink`` attaches to its host; where they live in worker processes it attaches to
a ``WorkerRelay``: a ring link of its own to that worker (as a front-end's), the link's
commands sent on it as they are and its events sent back, the worker keeping the link's
state (cids, publish numbers, confirms). Front-end processes forward as the supervisor's
broker does (``FrontendForwarder``), fed the leaders by the supervisor (``contract.Leaders``).
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
from urllib.parse import unquote

from .. import contract as c
from .. import errors
from ..frontend import actions
from ..frontend.partition_client import WINDOW, HostGone, PartitionClient
from ..frontend.broker import worker_of
from ..frontend.exchange import PartitionedExchange
from ..links import ring
from ..links.local import LocalLink
from ..links.tcp import StreamEndpoint
from .membership import NODES
from .metadata import META, kind_of
from .placement import PARTITIONS, parse_partition_key, queue_entry
from .routes import RoutesCopy, RoutesTable

log = logging.getLogger("amqpbroker.cluster")

RETRY = 0.5                 # seconds between dials of a node that does not answer
CONNECT_TIMEOUT = 3.0
OPEN_WAIT = 5.0             # how long an Open waits for this node to apply the queue
OPEN_AGAIN = 0.1            # seconds before an Open refused as "not led by" is sent again
LINGER = 2.0                # seconds an unused link waits for answers to what it carried
SWEEP = 0.1                 # seconds between looks at such links
NOT_LED = "is not led by node"
PEERS_REACH_TIMEOUT = 2.0   # seconds a metadata change waits for the other nodes to apply it
_EPOCHS = itertools.count(1)


def _quiet(fut) -> None:
    """A call whose failure needs no more than its caller's timeout (retrieved, not logged)."""
    if not fut.cancelled():
        fut.exception()


def _log_copy_open(q, fut) -> None:
    exc = None if fut.cancelled() else fut.exception()
    if exc is not None and not isinstance(exc, HostGone):
        log.error("queue '%s' in vhost '%s': its local copy could not be opened again after "
                  "its worker restarted: %s", q.name, q.vhost.name, exc)


class RemoteClient(PartitionClient):
    """The partition client of the queues another node leads: its link is a TCP stream to
    that node's cluster port, dialled on first use and again after a loss."""

    remote = True               # another node's (supervisor/groups.py: a group's coordinator)

    def __init__(self, forwarder, node: str, worker: int = 0):
        broker = forwarder.broker
        super().__init__(-1, broker.loop, functools.partial(actions.apply, broker))
        self.forwarder = forwarder
        self.node = node
        self.worker = worker                # the leader node's worker hosting our queues
        # unique across clients: a delivery tag from before a move is void after it
        self.epoch = next(_EPOCHS) << 32
        self._dialling: asyncio.Task | None = None
        self._reopen = False                # a failed link: open every queue on the next
        self.retiring: float | None = None  # since when no queue uses it (Forwarder._retire)

    def _gone_error(self) -> HostGone:
        return HostGone(f"node '{self.node}' leading the queue cannot be reached; "
                        f"the queue is unavailable until it returns or another node leads it")

    def on_alarm(self, m: c.Alarm) -> None:
        """The leader's disk alarm blocks its own publishers; this node's are its own."""

    def request(self, cls, **fields):
        fut = super().request(cls, **fields)
        if cls is c.Open:
            fut.add_done_callback(functools.partial(self._open_answered, fields["qid"],
                                                    self.loop.time()))
        return fut

    def _open_answered(self, qid: int, since: float, fut) -> None:
        """The leader refused an Open because its view still shows another leader: this
        node saw the change first. Open again shortly (the leader maps it once its view
        caught up; the ref's ``down`` clears), for up to OPEN_WAIT."""
        if fut.cancelled() or fut.exception() is None \
                or NOT_LED not in str(getattr(fut.exception(), "text", fut.exception())):
            return
        if self.loop.time() - since < OPEN_WAIT:
            self.loop.call_later(OPEN_AGAIN, self._open_again, qid, since)

    def _open_again(self, qid: int, since: float) -> None:
        ref = self.refs.get(qid)
        if ref is None or ref.client is not self or ref.deleted or self.forwarder.closed:
            return
        ref.opened = fut = super().request(
            c.Open, qid=qid, vhost=ref.vhost.name, name=ref.name, durable=ref.durable,
            auto_delete=ref.auto_delete, arguments=ref.arguments, directory=ref.directory)
        fut.add_done_callback(ref._open_done)
        fut.add_done_callback(functools.partial(self._open_answered, qid, since))

    def dial(self) -> None:
        """Dial the node unless linked; what is sent meanwhile waits (``Pending``)."""
        if self.connected:
            return
        if self.link is None:
            self.link = Pending()
        if self._dialling is None or self._dialling.done():
            self._dialling = self.loop.create_task(self._dial(), name=f"dial-{self.node}")

    @property
    def connected(self) -> bool:
        return isinstance(self.link, StreamEndpoint)

    def unanswered(self) -> bool:
        """Publishes, settles or requests sent that the node has not answered yet."""
        return self.seq > self.done_seq or bool(self.pending)

    async def _dial(self) -> None:
        """Each attempt holds what is sent meanwhile (``Pending``) and sends it once the
        link is up; an attempt that fails fails what it held (``host_lost``: nacks, 404s)
        and the next one opens every queue again."""
        fw = self.forwarder
        while not self.connected and not fw.closed and (self.refs or self.pending):
            reg = fw.registration(self.node)
            if self.link is None:
                self.link = Pending()
            end = None
            if reg and reg.get("cluster_port"):
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(reg["host"], reg["cluster_port"]),
                        CONNECT_TIMEOUT)
                except (OSError, asyncio.TimeoutError) as exc:
                    log.debug("cluster link to %s: %s", self.node, exc)
                else:
                    end = StreamEndpoint(reader, writer, self.on_events,
                                         yield_after=c.Reply, on_close=self._lost)
            if fw.closed:
                if end is not None:
                    end.close()
                return
            if end is not None:
                end.send(c.NodeHello(node=fw.node.name, worker=self.worker))
                end.start()
                held, self.link = self.link, end
                log.info("cluster link to node %s (worker %d) open", self.node, self.worker)
                if self._reopen:
                    self._reopen = False
                    self.reopen()           # every queue of ours, on the new link
                for msg in held.messages:
                    end.send(msg)
                for listener in fw.on_link:
                    listener(self)          # consumer groups: join again at a coordinator
                return
            if isinstance(self.link, Pending):
                self._fail()
            await asyncio.sleep(RETRY)

    def _fail(self) -> None:
        self.host_lost()                    # link None: nacks, 404s, basic.cancel
        self._reopen = True

    def _lost(self, end) -> None:
        if self.link is not end:
            return
        log.warning("cluster link to node %s lost: publishes in flight are nacked, consumers "
                    "cancelled", self.node)
        self._fail()
        self.dial()

    def close(self) -> None:
        if self._dialling is not None:
            self._dialling.cancel()
        if self.link is not None:
            self.link.close()
            self.link = None


class Pending:
    """The link of a node being dialled: what is sent waits, in order, for the stream."""

    def __init__(self):
        self.messages: list = []

    def send(self, msg) -> None:
        self.messages.append(msg)

    emit = send

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.messages.clear()


def queues_touched(keys) -> set | None:
    """The queues (vhost, name) whose leader a change of the etcd keys ``keys`` may have
    changed: a partition key's queue (partition i of a topic T: its queue ``T-i``), a queue
    object's (declared or deleted); None when it may be any queue's: ``keys`` None (a fresh
    list of etcd, fencing), a node's registration (its workers: which of its links a queue
    takes), a vhost object. Other keys (bindings, users, the controller's...) name none."""
    if keys is None:
        return None
    out = set()
    for key in keys:
        if key.startswith(PARTITIONS):
            try:
                vhost, queue, i = parse_partition_key(key)
            except ValueError:
                continue
            out.add((vhost, f"{queue}-{i}"))
            if i == 0:
                out.add((vhost, queue))
        elif key.startswith(NODES):
            return None
        elif key.startswith(META):
            kind = kind_of(key)
            if kind == "vhost":
                return None
            if kind == "queue":
                _, vhost, name = key[len(META):].split("/")
                out.add((unquote(vhost), unquote(name)))
    return out


class Forwarder:
    def __init__(self, node, broker):
        self.node = node                    # ClusterNode
        self.broker = broker
        self.remotes: dict[tuple[str, int], RemoteClient] = {}   # (node, worker) ->
        self.meta_clients: dict[str, RemoteClient] = {}     # node -> its MetaReach link
        self.links: set = set()             # ForwardedLinks of other nodes, served here
        self.closed = False
        self.local_copies: dict = {}        # QueueRef -> (local client, qid): its copy here
        self._copies: dict[tuple, set] = {}  # (vhost, name) -> the refs in local_copies
        self._leaders: dict[str, tuple[int, str | None]] = {}   # key -> (mod rev, leader)
        self.replication = None             # replication.Replication (the node sets it)
        self._sweep = None                  # a later look at links being retired
        self.routes = RoutesTable(node.name)    # the front-ends' routes (routes.py)
        self._told: dict[int, tuple] = {}   # front-end index -> (its channel, version told)
        self._registrations: tuple[int, dict] = (-1, {})    # (view revision, nodes)
        self.on_link: list = []             # callables(RemoteClient) when a link is up
        broker.forwarder = self

    # ------------------------------------------------------------ the calling side
    def follow_view(self) -> None:
        """The membership's callback after each change of the etcd mirror: the queues whose
        keys it touched are pointed again (every queue after a fresh list of etcd, fencing,
        or a node that came, went or changed its registration)."""
        self.review(queues_touched(self.node.membership.touched))

    def review(self, queues=None) -> None:
        """Point queues at their partitions' leaders: those named in ``queues`` ((vhost,
        name) pairs), or every queue (None); then dial or retire links and tell the
        front-ends what changed."""
        try:
            self._review(queues)
        except Exception:           # a bug must not stop the node following etcd
            log.exception("forwarding: following partition leaders")

    def _review(self, queues) -> None:
        if self.closed:
            return
        vhosts = self.broker.vhosts
        if queues is None:
            for vh in list(vhosts.values()):
                for q in list(vh.queues.values()):
                    self._point(vh, q)
        else:
            for vhost, name in queues:
                vh = vhosts.get(vhost)
                q = vh.queues.get(name) if vh is not None else None
                if q is not None:
                    self._point(vh, q)
        self._tidy(queues)
        self._update_routes(queues)
        self.tell_frontends()

    def _tidy(self, queues=None) -> None:
        """After queues were pointed: drop the local copies of deleted queues (of those
        ``queues`` names, None: every copy; a queue is deleted by an event that touches its
        object, so the pass over its keys names it), retire the links no queue uses, dial
        the others. (Every copy on every event was O(forwarded queues) per event on every
        node: bench/RESULTS.md "The controller's pass".)"""
        if queues is None:
            copies = list(self.local_copies)
        else:
            copies = [q for name in queues for q in self._copies.get(name, ())]
        for q in copies:
            if q.deleted:                   # deleted in the cluster: this node's copy too
                client, qid = self._forget_copy(q)
                self.drop_local_copy(q, client, qid)
        for name, client in list(self.remotes.items()):
            if not client.refs:
                self._retire(name, client)
            elif not client.connected:
                client.dial()

    def _keep_copy(self, q, client, qid: int) -> tuple:
        saved = self.local_copies[q] = (client, qid)
        self._copies.setdefault((q.vhost.name, q.name), set()).add(q)
        return saved

    def _forget_copy(self, q) -> tuple:
        name = (q.vhost.name, q.name)
        refs = self._copies.get(name, set())
        refs.discard(q)
        if not refs:
            self._copies.pop(name, None)
        return self.local_copies.pop(q)

    def _retire(self, key, client: "RemoteClient") -> None:
        """A ``RemoteClient`` no queue points at any more (its queues moved) is closed once
        its node has answered what was sent on it: publishes in flight across a move are
        settled by the old link (confirmed if that node stored them, nacked if it stopped
        leading first), so the link stays until then, for up to LINGER; what is still
        unanswered is nacked (requests fail) as on a lost link. Closed at once, a publish
        made just before a leader move had no answer at all (a client waited for its own
        timeout: the checker's slow failovers)."""
        now = self.broker.loop.time()
        if client.unanswered() and client.connected:
            if client.retiring is None:
                client.retiring = now
                client.want(client.seq)     # the node reports its watermark once past it
            if now - client.retiring < LINGER:
                if self._sweep is None:
                    self._sweep = self.broker.loop.call_later(SWEEP, self._swept)
                return
        client.close()
        if client.unanswered():
            client.host_lost()              # nacks what is in flight, fails requests
        del self.remotes[key]

    def _swept(self) -> None:
        self._sweep = None
        if not self.closed:
            for key, client in list(self.remotes.items()):
                if not client.refs:
                    self._retire(key, client)

    def _point(self, vh, q) -> None:
        """Point one queue at its partition's leader."""
        if q.deleted or q.exclusive_owner is not None:
            return                      # exclusive queues live on their connection's node
        leader = self.leader_of(vh.name, q.name)
        if not leader:
            return
        target = (self.local_client(q) if leader == self.node.name
                  else self.remote(leader, self.worker_on(leader, vh.name, q.name)))
        if target is None:
            log.warning("queue '%s' in vhost '%s': led by this node, which has no copy of it "
                        "open; left where it is", q.name, vh.name)
        elif q.client is not target:
            self.move(q, target)

    def local_client(self, q):
        """The partition client of this node's worker hosting the queue's copy: the one it
        is on (the metadata owner placed it: ``owner.place``, a topic's partitions round
        the workers from the topic's), or while it is forwarded, the one its copy was left
        open on (``local_copies``); None if there is none (a queue is made on its local
        client and moved away from it, so never). Never placed again by name here: a
        front-end's placement by name knew no topics, so a partition its node led was moved
        to another worker under a qid of the front-end's numbering, which names another
        queue there (a follower's copy: its publishes nacked; else confirmed there,
        unreplicated)."""
        if not isinstance(q.client, RemoteClient):
            return q.client
        saved = self.local_copies.get(q)
        return saved[0] if saved is not None else None

    def review_queue(self, vhost: str, name: str) -> None:
        """Point one queue (a front-end applied its ``QueueOp`` after the ``Leaders``)."""
        vh = self.broker.vhosts.get(vhost)
        q = vh.queues.get(name) if vh is not None else None
        if q is not None:
            self._point(vh, q)
            for client in self.remotes.values():
                if client.refs and not client.connected:
                    client.dial()

    def _update_routes(self, queues) -> None:
        """The front-ends' routes (routes.py) after a pass over ``queues`` (None: every
        queue): which queues this broker forwards, to which node. A new version only when
        they changed."""
        if not getattr(self.broker, "frontends", None):
            return
        nodes = {}
        leaders = {}
        for (node, worker), client in self.remotes.items():
            reg = self.registration(node) or {}
            nodes[node] = [reg.get("host"), reg.get("cluster_port"), reg.get("workers")]
            if queues is None:
                for q in client.refs.values():
                    leaders[q.vhost.name, q.name] = node
        if queues is not None:
            vhosts = self.broker.vhosts
            for vhost, name in queues:
                vh = vhosts.get(vhost)
                q = vh.queues.get(name) if vh is not None else None
                client = q.client if q is not None else None
                if isinstance(client, RemoteClient) and client.refs.get(q.qid) is q:
                    leaders[vhost, name] = client.node
        self.routes.node = self.node.name
        self.routes.update(nodes, leaders, queues)

    def tell_frontends(self) -> None:
        """Front-end processes forward as this broker does: they are told which queues it
        forwards, to which node, when that changed (``contract.LeadersChanged``) or they
        restarted (``contract.Leaders``, the whole table): routes.py."""
        frontends = getattr(self.broker, "frontends", None)
        if not frontends or self.closed:
            return
        for fe in frontends:
            if fe.control is None:
                continue
            told = self._told.get(fe.index)
            msg = self.routes.message_for(told[1] if told and told[0] is fe.control else None)
            if msg is not None:
                self._told[fe.index] = (fe.control, self.routes.version)
                fe.control.notify(msg)

    def tell_whole(self, fe) -> None:
        """A front-end whose table missed a change asked for the whole (``LeadersWanted``)."""
        if fe.control is not None and not self.closed:
            self._told[fe.index] = (fe.control, self.routes.version)
            fe.control.notify(self.routes.whole())

    def drop_local_copy(self, q, client, qid: int) -> None:
        """Remove the files of this node's copy of a deleted queue that another node led, as
        the owner removes a deleted queue's (a tombstone until the host has done it)."""
        if client.link is None:
            return                          # its worker restarts: the sweep at start does it
        tombstone = None
        if q.durable:
            tombstone = os.path.basename(q.directory)
            self.broker.definitions.add_tombstone(tombstone)
        done = client.request(c.Delete, qid=qid, if_unused=False, if_empty=False)
        if tombstone is not None:
            done.add_done_callback(functools.partial(self.broker._queue_files_removed,
                                                     tombstone))

    def leader_of(self, vhost: str, queue: str) -> str | None:
        """The leader of a queue's partition (a topic's partition queue ``T-i``: its own), as
        ``placement.of_queue`` reads it, each key parsed once per revision: the pass above
        runs on every etcd event and is then a dict lookup per queue."""
        key, kv = queue_entry(self.node.membership.view, vhost, queue)
        if kv is None:
            return None
        cached = self._leaders.get(key)
        if cached is None or cached[0] != kv.mod_revision:
            try:
                leader = json.loads(kv.value).get("leader")
            except ValueError:
                leader = None
            cached = self._leaders[key] = (kv.mod_revision, leader)
        return cached[1]

    def leader_epoch(self, vhost: str, queue: str) -> int:
        """The leader epoch of a queue's partition as the etcd view has it (0 if none): a
        consumer group's coordinator's term (supervisor/groups.py)."""
        _, kv = queue_entry(self.node.membership.view, vhost, queue)
        try:
            return int(json.loads(kv.value).get("leader_epoch") or 0) if kv is not None else 0
        except (ValueError, TypeError):
            return 0

    def registration(self, node: str) -> dict | None:
        """A node's registration (host, cluster port, workers), as the etcd view has it
        (read once per revision of the view: a whole pass asks once per queue)."""
        m = self.node.membership
        revision, nodes = self._registrations
        if revision != m.revision:
            nodes = m.nodes()
            self._registrations = (m.revision, nodes)
        return nodes.get(node)

    def worker_on(self, node: str, vhost: str, queue: str) -> int:
        """The worker of ``node`` that hosts the queue, of its registration's ``workers``:
        where the queue's name hashes, or for partition i of a topic, the i-th worker after
        the one the topic's name hashes to, as that node places it (supervisor/topics.py,
        ``partition_worker``). (By the partition queue's own name, a front-end's Open of
        a topic's partition on a node with workers went to the wrong worker: refused, the
        queue down there, its publishes nacked.)"""
        reg = self.registration(node) or {}
        workers = reg.get("workers") or 1
        topic, sep, index = queue.rpartition("-")
        if sep and index.isascii() and index.isdigit():
            vh = self.broker.vhosts.get(vhost)
            ex = vh.exchanges.get(topic) if vh is not None else None
            if isinstance(ex, PartitionedExchange) and int(index) < ex.partitions \
                    and str(int(index)) == index:
                return (worker_of(vhost, topic, workers) + int(index)) % workers
        return worker_of(vhost, queue, workers)

    def remote(self, node: str, worker: int = 0) -> RemoteClient:
        client = self.remotes.get((node, worker))
        if client is None:
            client = self.remotes[node, worker] = RemoteClient(self, node, worker)
        client.retiring = None              # in use again
        return client

    def move(self, q, target) -> None:
        """``q`` is served by ``target`` from now on (see the module doc)."""
        old = q.client
        saved = self.local_copies.get(q)
        if not isinstance(target, RemoteClient) and (saved is None or saved[0] is not target):
            raise ValueError(f"queue '{q.name}' in vhost '{q.vhost.name}': no copy open on "
                             f"that worker to move back to (its qid there is the metadata "
                             f"owner's)")
        log.info("queue '%s' in vhost '%s': forwarded to %s", q.name, q.vhost.name,
                 f"node {target.node}" if isinstance(target, RemoteClient) else "this node")
        old.refs.pop(q.qid, None)
        if not isinstance(old, RemoteClient):
            saved = self._keep_copy(q, old, q.qid)   # still open here, with its files
        requeue = []
        for s in list(self.broker.sessions):
            for ch in list(getattr(s, "channels", {}).values()):
                # a delivery is a tuple (queue, offset, consumer, epoch): channel.py
                for dq, offset, _consumer, epoch in ch.unacked.values():
                    if dq is q and epoch == old.epoch:
                        requeue.append(offset)
        if requeue:
            old.reject(q.qid, requeue, True)
        shares = []
        for cid, consumer in list(old.consumers.items()):
            if consumer.queue is q:
                old.send(c.Unsub(req=0, cid=cid))
                if consumer.member is not None:
                    # a consumer group member's share follows its partition (subscribed on
                    # the new leader below; the group's coordinator tells that leader the
                    # owner: supervisor/groups.py): the member stays, its deliveries from
                    # the old leader are void (epoch)
                    del old.consumers[cid]
                    shares.append(consumer)
                    continue
                # basic.cancel to the client: ``on_cancel`` only returns the action
                old.apply(old, old.on_cancel(c.Cancel(cid=cid)))
        if isinstance(target, RemoteClient):
            target.dial()
            q.qid = target.new_qid()        # the link's numbering (ForwardedLink maps it)
        else:
            # back to this node's worker: only under the qid its copy is open with there,
            # the number the metadata owner gave it (a front-end numbers no queue of a
            # worker's: ``new_qid`` of its client names another queue, or none, there)
            self._forget_copy(q)
            q.qid = saved[1]                # (Open is a no-op)
        q.client = target
        target.refs[q.qid] = q
        q.set_backlogged(False)
        q.opened = q.open()
        if shares:
            self.broker.loop.create_task(self._shares_follow(q, target, shares))

    async def _shares_follow(self, q, target, shares) -> None:
        """Subscribe the shares of a moved partition on its new leader once it has opened
        the queue there: a leader whose view is behind this node's refuses the Open
        ("not led by"; ``RemoteClient`` opens again), and a Sub before that would go to no
        queue. A share whose member left meanwhile stays away; if the queue never opens
        (``OPEN_WAIT``) or moves on, its member is cancelled, as a plain consumer is."""
        loop = self.broker.loop
        deadline = loop.time() + OPEN_WAIT + 1.0
        while q.client is target and not q.deleted and not self.closed:
            opened = q.opened
            try:
                await asyncio.shield(opened)
            except Exception:
                if opened is q.opened and loop.time() > deadline:
                    break
                await asyncio.sleep(OPEN_AGAIN)
                continue
            if opened is not q.opened:
                continue                    # opened again meanwhile: wait for that one
            live = [s for s in shares if s.channel.groups.get(s.member.tag) is s.member
                    and not s.channel.closed]
            for share in live:
                share.cid = target.new_cid()    # cids are the link's
            target.apply(target, [actions.Resubscribe(target, share,
                                                      share.initial_credit(WINDOW))
                                  for share in live])
            return
        for share in shares:                # basic.cancel: the member leaves its group
            if share.channel.groups.get(share.member.tag) is share.member:
                share.channel.consumer_cancelled(share)

    # ------------------------------------------------------------ the leader's side
    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A node's link to this one (the cluster port's handler)."""
        if self.closed:
            writer.close()
            return
        link = ForwardedLink(self)          # its host: chosen by the NodeHello
        link.endpoint = StreamEndpoint(reader, writer, link.on_batch, on_close=link.lost)
        self.links.add(link)
        link.endpoint.start()

    def host_for(self, link, worker: int):
        """The host a link's ``NodeHello`` asks for: this process's, or a relay to the
        worker (None: no such worker, or it is restarting: the link is closed, the caller
        dials again)."""
        host = self.local_host()
        if host is not None:
            return host
        workers = getattr(self.broker, "workers", None) or ()
        if worker >= len(workers) or workers[worker].control is None \
                or workers[worker].client.link is None:
            return None
        return WorkerRelay(workers[worker], f"node-{link.node}-{next(_EPOCHS)}")

    def worker_lost(self, worker) -> None:
        """A worker died: the links relayed to it close (their callers nack, cancel and
        dial again, landing on the restarted worker)."""
        for link in list(self.links):
            if isinstance(link.host, WorkerRelay) and link.host.worker is worker:
                link.close()

    def worker_back(self, worker) -> None:
        """A restarted worker has its own queues open again (``WorkerProcess.after_restart``):
        open the local copies it held too, each under the qid it had there (a follower's
        replica of a queue another node leads, kept open for replication). The new worker
        recovers each from its files, and the role the supervisor tells it again
        (``Replication._tick``: a restarted worker is told every role) finds it open and
        fetches from the leader. (Not reopened, a follower's copy stayed closed: the role
        waited for it forever, the follower never fetched again and left the ISR, and with
        both followers' workers restarted the queue nacked every publish: found by the
        checker's ``kill_follower_worker``.)"""
        for q, (client, qid) in list(self.local_copies.items()):
            if client is worker.client and not q.deleted:
                q.open_on(client, qid).add_done_callback(
                    lambda fut, q=q: _log_copy_open(q, fut))

    def local_host(self):
        """The host of this node's queues when it runs in this process (``--workers 0``)."""
        parts = self.broker.partitions
        if len(parts) == 1 and isinstance(parts[0].link, LocalLink):
            return parts[0].link.host
        return None

    def _known(self, vhost: str, name: str):
        vh = self.broker.vhosts.get(vhost)
        return vh.queues.get(name) if vh is not None else None

    def local_queue(self, vhost: str, name: str):
        q = self._known(vhost, name)
        if q is None or q.deleted or q.exclusive_owner is not None \
                or isinstance(q.client, RemoteClient):
            return None
        return q

    def led_elsewhere(self, vhost: str, name: str) -> bool:
        """This node has the queue but forwards it: another node leads it."""
        return isinstance(getattr(self._known(vhost, name), "client", None), RemoteClient)

    def meta_client(self, node: str) -> RemoteClient:
        """This node's link to ``node``'s supervisor for calls that are no queue's
        (``MetaReach``, ``DedupSeen``): one per node, never retired, dialled on use."""
        client = self.meta_clients.get(node)
        if client is None:
            client = self.meta_clients[node] = RemoteClient(self, node, 0)
        client.dial()
        return client

    async def peers_reach(self, revision: int) -> None:
        """Return once every other registered node has applied etcd up to ``revision``
        (``contract.MetaReach``), or after ``PEERS_REACH_TIMEOUT``: a node that cannot be
        reached (down, cut off, its lease not yet expired) does not hold a declare longer.
        One link per node for these (``meta_clients``: not a queue's, never retired)."""
        peers = [n for n in self.node.membership.nodes() if n != self.node.name]
        if not peers or self.closed:
            return
        calls = []
        for node in peers:
            fut = self.meta_client(node).request(c.MetaReach, revision=revision)
            fut.add_done_callback(_quiet)
            calls.append(fut)
        done, late = await asyncio.wait(calls, timeout=PEERS_REACH_TIMEOUT)
        if late:
            log.warning("a metadata change (etcd revision %d) not confirmed applied by %d "
                        "other node(s) within %.1fs: answered anyway", revision, len(late),
                        PEERS_REACH_TIMEOUT)

    async def close(self) -> None:
        self.closed = True
        for client in (*self.remotes.values(), *self.meta_clients.values()):
            client.close()
        for link in list(self.links):
            link.close()


class ForwardedLink:
    """Another node's link to this node's host: its commands with its qids mapped onto ours
    (``Open`` names the queue), our events with ours mapped back (see the module doc)."""

    QID_LISTS = (c.Stats, c.GroupOffsets, c.GroupOwners, c.Partitions)  # a list out, a dict
    #                                                                     by qid back

    def __init__(self, forwarder: Forwarder, host=None):
        self.forwarder = forwarder
        self.host = host                    # PartitionHost, or WorkerRelay (host_for)
        self.endpoint: StreamEndpoint | None = None
        self.state = None
        self.node = "?"
        self.qids: dict[int, int] = {}      # remote qid -> local qid
        self.back: dict[int, int] = {}      # local qid -> remote qid (the latest)
        self.keyed: dict[int, None] = {}    # reqs whose reply is a dict by local qid
        self.held: list | None = None       # commands behind an Open that waits (in order)
        self.refused: dict[int, c.Open] = {}    # remote qid -> its Open refused "not led"
        self.delayed: dict[int, list] = {}  # remote qid -> group commands waiting for it
        self._waiting_since = 0.0

    # ------------------------------------------------------------ commands in
    def on_batch(self, batch) -> None:
        if self.held is not None:
            self.held.extend(batch)
            return
        self._handle(batch)

    def _handle(self, batch) -> None:
        out = []
        qids = self.qids
        for i, m in enumerate(batch):
            kind = type(m)
            if kind is c.Pub or kind is c.Ack or kind is c.Reject or kind is c.Modify:
                local = qids.get(m.qid)
                if local is None:
                    local = self._remap(m.qid)
                if local is None and kind is c.Pub:
                    # its Open failed (or never came): nacked, never confirmed unstored
                    if out:
                        self.host.handle(self.state, out)
                        out = []
                    self.host.refuse(self.state, m, f"queue {m.qid} of node '{self.node}' "
                                                    f"is not open on this node")
                    continue
                out.append(m._replace(qid=local or 0))
            elif kind is c.Open:
                if not self._open(m):
                    self.host.handle(self.state, out)
                    self.held = list(batch[i:])
                    self.forwarder.broker.loop.call_later(0.05, self._retry)
                    return
            elif kind is c.Fetch:           # a follower's (replication.py)
                local = qids.get(m.qid) or self._remap(m.qid)
                if type(self.host) is WorkerRelay:
                    out.append(m._replace(qid=local or 0))
                    continue
                if out:
                    self.host.handle(self.state, out)
                    out = []
                self.forwarder.replication.on_fetch(self, m, local)
            elif kind is c.NodeHello:
                self.node = m.node
                if self.host is None:
                    self.host = self.forwarder.host_for(self, m.worker)
                    if self.host is None:
                        log.warning("cluster link from node %s refused: worker %d is not "
                                    "serving", m.node, m.worker)
                        self.close()
                        return
                    self.state = self.host.attach(self)
                if type(self.host) is WorkerRelay:
                    out.append(m)           # the worker's fetches name the follower
            elif kind is c.Close:
                pass                        # the remote's shutdown is not ours
            elif kind is c.MetaReach:       # the supervisor's, not the host's
                asyncio.ensure_future(self._meta_reach(m))
            elif kind is c.DedupSeen:       # this node holds the exchange's cache
                seen = self.forwarder.broker.metadata.dedup_here(**c.fields_of(m))
                self.emit(c.Reply(req=m.req, ok=True, value=seen))
            elif kind is c.JoinGroup or kind is c.LeaveGroup or kind is c.GroupDescribe:
                if out:                     # in order with the link's commands before it
                    self.host.handle(self.state, out)
                    out = []
                self._group_call(m)         # the supervisor's, not the host's
            elif (kind is c.GroupAssign or kind is c.GroupRevoke) and (
                    m.qid in self.delayed or m.qid in self.refused
                    and not (qids.get(m.qid) or self._remap(m.qid))):
                self._delay(m)              # until its Open maps (in order), not to qid 0
            elif kind in self.QID_LISTS:
                self.keyed[m.req] = None
                out.append(m._replace(qids=[qids.get(q, 0) for q in m.qids]))
            elif "qid" in m._fields:
                out.append(m._replace(qid=qids.get(m.qid) or self._remap(m.qid) or 0))
            else:
                out.append(m)
        if out:
            self.host.handle(self.state, out)

    def _open(self, m: c.Open) -> bool:
        """Map the remote's qid onto ours; False while this node has not applied the queue
        yet (its declare is in etcd, the watch is on its way)."""
        q = self.forwarder.local_queue(m.vhost, m.name)
        if q is not None and type(self.host) is WorkerRelay \
                and q.client is not self.host.worker.client:
            q = None                        # on another worker than the link's: a caller
            #                                 that counts another number of workers
        if q is None and self.forwarder.led_elsewhere(m.vhost, m.name):
            # the two nodes' views of its leader differ for a moment: answer at once (the
            # caller follows the leader when its view catches up), never hold the link
            err = errors.NotFound(f"queue '{m.name}' in vhost '{m.vhost}' {NOT_LED} "
                                  f"'{self.forwarder.node.name}'")
            self.refused[m.qid] = m         # our view may be the one behind: _remap
            if m.req:
                self.emit(c.Reply(req=m.req, ok=False, value=errors.to_reply(err)))
            return True
        if q is None:
            now = self.forwarder.broker.loop.time()
            if not self._waiting_since:
                self._waiting_since = now
                return False
            if now - self._waiting_since < OPEN_WAIT:
                return False
            self._waiting_since = 0.0
            err = errors.NotFound(f"no queue '{m.name}' in vhost '{m.vhost}' on node "
                                  f"'{self.forwarder.node.name}'")
            if m.req:
                self.emit(c.Reply(req=m.req, ok=False, value=errors.to_reply(err)))
            return True
        self._waiting_since = 0.0
        self.refused.pop(m.qid, None)
        self.qids[m.qid] = q.qid
        self.back[q.qid] = m.qid
        if m.req:
            self.emit(c.Reply(req=m.req, ok=True, value=None))
        return True

    def _remap(self, qid: int) -> int | None:
        """A qid whose Open this node refused because its view showed another leader: the
        caller's view was ahead (it saw this node become the leader first) when ours has
        caught up since; map it now, so its commands do not go to no queue meanwhile."""
        m = self.refused.get(qid)
        if m is None:
            return None
        q = self.forwarder.local_queue(m.vhost, m.name)
        if q is None or (type(self.host) is WorkerRelay
                         and q.client is not self.host.worker.client):
            return None
        del self.refused[qid]
        self.qids[qid] = q.qid
        self.back[q.qid] = qid
        return q.qid

    def _delay(self, m) -> None:
        """A group coordinator's Assign or Revoke for a queue whose Open this node refused
        a moment ago (its view of the leader was behind the coordinator's): held, in order,
        until the queue maps (``_remap``), for up to OPEN_WAIT; dropped to qid 0 before, the
        partition's new owner never started (the coordinator does not send it again)."""
        waiting = self.delayed.get(m.qid)
        if waiting is None:
            loop = self.forwarder.broker.loop
            waiting = self.delayed[m.qid] = []
            loop.call_later(OPEN_AGAIN, self._undelay, m.qid, loop.time() + OPEN_WAIT)
        waiting.append(m)

    def _undelay(self, qid: int, deadline: float) -> None:
        loop = self.forwarder.broker.loop
        if self.state is None or self.endpoint is None or self.endpoint.closed:
            self.delayed.pop(qid, None)
            return
        local = self.qids.get(qid) or self._remap(qid)
        if local is None and loop.time() < deadline:
            loop.call_later(OPEN_AGAIN, self._undelay, qid, deadline)
            return
        waiting = self.delayed.pop(qid, [])
        self.host.handle(self.state, [m._replace(qid=local or 0) for m in waiting])

    def _group_call(self, m) -> None:
        """A member's node calls this node as its group's coordinator (supervisor/groups.py):
        answered here, in the supervisor, whatever host the link has."""
        groups = self.forwarder.broker.groups
        kind = type(m)
        try:
            if kind is c.JoinGroup:
                value = groups.remote_join(self, m)
            elif kind is c.LeaveGroup:
                groups.remote_leave(self, m)
                return
            else:
                value = groups.describe_here(m.vhost, m.topic, m.group)
        except errors.AMQPError as exc:
            if m.req:
                self.emit(c.Reply(req=m.req, ok=False, value=errors.to_reply(exc)))
            return
        if m.req:
            self.emit(c.Reply(req=m.req, ok=True, value=value))

    async def _meta_reach(self, m) -> None:
        """Another node made a metadata change: answer once this node has applied it, its
        front-end processes too (``Forwarder.peers_reach``)."""
        broker = self.forwarder.broker
        try:
            await broker.metadata.reach(m.revision)
            await broker.sync_frontends()
        except errors.AMQPError as exc:
            self.emit(c.Reply(req=m.req, ok=False, value=errors.to_reply(exc)))
            return
        self.emit(c.Reply(req=m.req, ok=True, value=None))

    def _retry(self) -> None:
        held, self.held = self.held, None
        if held is None or self.endpoint is None or self.endpoint.closed:
            return
        self._handle(held)

    # ------------------------------------------------------------ events out
    def on_events(self, batch) -> None:
        """A batch of events from the worker a ``WorkerRelay`` links to."""
        for event in batch:
            self.emit(event)

    def emit(self, event) -> None:
        kind = type(event)
        if kind is c.Dlv or kind is c.Dlvs or kind is c.Flow or kind is c.Gone \
                or kind is c.GroupRevoked:
            remote = self.back.get(event.qid)
            if remote is None:
                return                      # a queue this node has not opened
            event = event._replace(qid=remote)
        elif kind is c.Reply and event.req in self.keyed:
            del self.keyed[event.req]
            if event.ok and isinstance(event.value, dict):
                back = self.back
                event = event._replace(value={back[k]: v for k, v in event.value.items()
                                              if k in back})
        elif kind is c.Dlx:
            return                          # the supervisor's (links[0]), never ours
        self.endpoint.send(event)

    send = emit

    def flush(self) -> None:
        """Write what was emitted now, not at the loop's next turn (``Leader.on_written``)."""
        if self.endpoint is not None:
            self.endpoint.flush()

    # ------------------------------------------------------------ the end
    def lost(self, end) -> None:
        """The other node went away: its consumers go, their unacked messages requeued."""
        self._detach()

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        self._detach()

    def _detach(self) -> None:
        if self.state is not None:
            self.host.detach(self.state)
            self.state = None
        self.forwarder.links.discard(self)
        groups = getattr(self.forwarder.broker, "groups", None)
        if groups is not None:
            groups.link_lost(self)          # its node's group members leave


class WorkerRelay:
    """The host of a ``ForwardedLink`` on a node whose queues live in worker processes: a
    ring link of its own to the worker hosting them (``WorkerProcess.add_link``, as a
    front-end's). Commands go to the worker as they are (qids already mapped), events come
    back to the link; the worker keeps the link's state: cids, publish numbers, confirms,
    and, for a follower's ``Fetch``, the leader's side of replication."""

    def __init__(self, worker, name: str):
        self.worker = worker                # supervisor.workers.WorkerProcess
        self.name = name
        self.endpoint = None

    def attach(self, link) -> "WorkerRelay":
        self.endpoint = ring.attach(self.worker.add_link(self.name), link.on_events,
                                    yield_after=c.Reply)
        return self

    def handle(self, state, commands) -> None:
        send = self.endpoint.send
        for m in commands:
            send(m)

    def refuse(self, state, cmd, reason: str) -> None:
        """A publish for a queue not open here: qid 0 names no queue, so the worker nacks it
        in the link's order (its confirms are the link's watermark)."""
        self.endpoint.send(cmd._replace(qid=0))

    def detach(self, state) -> None:
        self.worker.remove_link(self.name)
        self.endpoint.close()


class FrontendForwarder(Forwarder):
    """The calling half in a front-end process (``--frontends N``): the queues the
    supervisor's broker forwards, and to which node, come from the supervisor
    (``contract.Leaders``: its routes, so both make the same choice) instead of an etcd
    view; this process dials the leaders' workers itself. It serves no cluster port, runs
    no replication, and leaves the files of a deleted queue's copy to the supervisor."""

    def __init__(self, broker):
        super().__init__(_Named(), broker)
        self.nodes: dict[str, dict] = {}
        self.copy = RoutesCopy()

    def update(self, m: c.Leaders) -> None:
        """The whole table: every queue is pointed again."""
        self.copy.apply_whole(m)
        self.node.name = m.node
        self._nodes_from(m.nodes)
        self.review()

    def change(self, m: c.LeadersChanged) -> bool:
        """A change of the table: the queues it names are pointed again (all of them when
        the nodes changed). False when it does not follow this copy's version: nothing
        was applied, the caller asks for the whole table."""
        nodes = self.copy.nodes
        changed = self.copy.apply_change(m)
        if changed is None:
            return False
        if m.nodes != nodes:
            self._nodes_from(m.nodes)
            self.review()
        elif changed:
            self.review(changed)
        return True

    def _nodes_from(self, nodes: dict) -> None:
        self.nodes = {n: {"host": host, "cluster_port": port, "workers": workers}
                      for n, (host, port, workers) in nodes.items()}

    def leader_of(self, vhost: str, queue: str) -> str | None:
        return self.copy.leaders.get((vhost, queue), self.node.name)

    def registration(self, node: str) -> dict | None:
        return self.nodes.get(node)

    def drop_local_copy(self, q, client, qid: int) -> None:
        """The supervisor removes the copy's files."""

    def tell_frontends(self) -> None:
        pass


class _Named:
    name = ""
