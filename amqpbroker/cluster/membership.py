"""Membership: this node's registration in etcd, its lease, fencing, and the cluster's view.

Theory of operation
-------------------
A node joins by granting itself a lease (``ttl`` seconds) and putting its key
``/amqpbroker/nodes/<name>`` on it, a JSON object: host, AMQP, management and cluster ports,
start time, state (``running``; ``leaving`` during a clean leave). It renews the lease every
``ttl / 3`` seconds. While renewals succeed the key stays; when the node dies or is cut off
from etcd for longer than the lease, etcd deletes the key and every other node sees it go.
A clean leave (SIGTERM) puts ``leaving`` and revokes the lease: the key goes at once.

Every node mirrors everything under ``/amqpbroker/`` (``view``: key -> ``KeyValue``) by
list-then-watch: a range read, then a watch from the revision after it, and a new range when
the watch breaks. The controller election (``controller.py``) and ``/api/nodes`` read the
mirror; nothing asks etcd on a request's path.

Fencing (the hook the data layer will use)
------------------------------------------
A node may act as a member (lead partitions, confirm publishes, act as the controller) only
while it is sure it still holds its lease. It is sure until ``sent + TTL``, where ``sent`` is
the local time at which it *sent* the last renewal that etcd answered with that TTL: etcd
restarted the lease's clock when it *received* that request, later, so the node's deadline
always falls before etcd's (clocks are not compared across machines, only durations, as
Kafka's and etcd's own leader leases do). Hence:

- ``holds_lease()``: a synchronous check of ``loop.time() < deadline``, cheap enough to make
  before every confirm. A node that was paused (SIGSTOP) and wakes up after its deadline
  fails the check at once, before any timer or renewal has run: it confirms nothing.
- ``fenced``: an ``asyncio.Event`` set when the deadline passes without a renewal (a timer at
  the deadline, so it fires even when a renewal hangs) or when etcd says the lease is gone;
  cleared when the node has a lease and its key again. ``on_fence`` callbacks run on each
  change (``True`` = fenced): the data layer will stop confirming and step down from every
  partition it leads on ``True``, and rejoin as a follower on ``False`` (docs/CLUSTER.md).

A fenced node keeps trying: each renewal that fails is retried; when etcd answers again and
the old lease has expired, the node grants a new one, puts its key again, and is unfenced
(``on_lease`` callbacks get the new lease, so the election campaigns again).

A disk that stops answering is a lost lease (``DiskHeartbeat``)
---------------------------------------------------------------
LavinMQ #2151: a leader whose disk hung kept renewing its lease, so it stayed the leader of
partitions it could no longer write. Here a thread rewrites and fsyncs a small file in the
data directory every TTL/10; a second thread watches it, and when one write-and-fsync has
been pending for TTL/2 (or failed: EIO is as bad as a hang) it fences the node *from that
thread*, because the event loop may itself be stuck on the same disk (a write, a
``statvfs``): ``holds_lease()`` turns false at once (a flag and the deadline, plain stores),
the lease is revoked by a blocking HTTP request to etcd, so the node's keys go and the
controller moves its partitions now rather than a TTL later, and the loop is told to set
``fenced`` when it next runs. While the disk stays stalled the node does not register again;
once a heartbeat completes it does, as after any fencing, and rejoins as a follower. One
heartbeat per node, in the supervisor, whatever the process layout: the workers write the
same data directory, so its disk answering is what is measured.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import urllib.request

from .etcd import EtcdClient, EtcdError, KeyValue

log = logging.getLogger("amqpbroker.cluster")

PREFIX = "/amqpbroker/"
NODES = PREFIX + "nodes/"


class Membership:
    def __init__(self, etcd: EtcdClient, name: str, info: dict, ttl: int):
        self.etcd = etcd
        self.name = name
        self.info = dict(info, name=name, started=int(time.time()), state="running")
        self.ttl = ttl
        self.loop = asyncio.get_running_loop()
        self.lease = 0
        self.deadline = 0.0                 # loop time until which the lease is surely held
        self.fenced = asyncio.Event()
        self.view: dict[str, KeyValue] = {}
        self.revision = 0                   # the etcd revision the view is at
        # the revision of our registration under the current lease: the lease counts as held
        # only once the view has reached it (a node back from a cut must not act on the view
        # it had before: it may lead nothing any more)
        self.registered_at = 0
        self._unfence_pending = False       # registered again; the mirror has not seen it
        self.on_view: list = []             # callbacks(): the view changed
        # a node key's last value when the watch deleted it (``remove``), name -> JSON, until
        # the controller reads it: a clean leave's "leaving" put and its lease's revoke may
        # come in one watch response, and the controller tells a leave from a loss by it
        self.departed: dict[str, str] = {}
        # the keys the latest change of the view put or deleted (a watch event's), None when
        # any key may have changed (a fresh list after a start or a broken watch, fencing):
        # for a callback that follows a few keys (forward.py)
        self.touched: set[str] | None = None
        # under(): prefix -> the view's entries under it, until one of their keys changes
        self._under: dict[str, list[KeyValue]] = {}
        self.on_fence: list = []            # callbacks(fenced: bool)
        self.on_lease: list = []            # callbacks(lease: int): a new lease is held
        self._tasks: list[asyncio.Task] = []
        self._fence_timer: asyncio.TimerHandle | None = None
        self._leaving = False
        self._waiters: list[asyncio.Future] = []
        self.disk: DiskHeartbeat | None = None  # watch_disk(): a stalled disk fences
        self.disk_stalled = False           # set by the heartbeat's watcher thread

    @property
    def key(self) -> str:
        return NODES + self.name

    def holds_lease(self) -> bool:
        """True while this node is certain etcd still has its lease and its disk answers
        (see the module doc)."""
        return (self.lease != 0 and not self.disk_stalled and self.loop.time() < self.deadline
                and self.revision >= self.registered_at)

    # ------------------------------------------------------------ the disk
    def watch_disk(self, data_dir: str) -> None:
        """Fence this node whenever ``data_dir``'s disk stops answering (``DiskHeartbeat``)."""
        os.makedirs(data_dir, exist_ok=True)
        self.disk = DiskHeartbeat(data_dir, self.ttl, self._disk_stalled, self._disk_answers)
        self.disk.start()

    def _disk_stalled(self, why: str) -> None:
        """The watcher thread: the loop may be stuck on the disk too, so fence from here."""
        self.disk_stalled = True            # holds_lease() is false from now on
        self.deadline = 0.0
        lease = self.lease
        if lease:                           # the others move our partitions now
            body = json.dumps({"ID": str(lease)}).encode()
            for base in list(self.etcd.endpoints):
                try:
                    req = urllib.request.Request(f"{base}/v3/lease/revoke", data=body,
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=1.0) as resp:
                        resp.read()
                    break
                except OSError as exc:      # etcd unreachable too: the lease runs out
                    log.warning("revoking lease %x after a disk stall: %s", lease, exc)
        try:
            self.loop.call_soon_threadsafe(self._disk_fence, lease, why)
        except RuntimeError:                # the loop is closed: shutting down
            pass

    def _disk_fence(self, lease: int, why: str) -> None:
        if self.lease == lease:
            self.lease = 0                  # revoked: the renewal loop registers anew
        if self.disk_stalled:
            self._set_fenced(True, why)

    def _disk_answers(self) -> None:
        """The watcher thread: a heartbeat completed again; the renewal loop re-registers."""
        self.disk_stalled = False
        log.warning("node %s: the data directory's disk answers again", self.name)

    def nodes(self) -> dict[str, dict]:
        """The live nodes as the view has them: name -> registration."""
        out = {}
        for kv in self.under(NODES):
            try:
                out[kv.key[len(NODES):]] = json.loads(kv.value)
            except ValueError:
                log.warning("unreadable node key %s: %r", kv.key, kv.value)
        return out

    def under(self, prefix: str) -> list[KeyValue]:
        """The view's entries whose keys start with ``prefix``, found once until one of them
        changes: the node keys and the election keys every etcd event asks for (the
        controller's and the forwarder's passes), without a scan of the whole view (every
        queue's keys) per event."""
        found = self._under.get(prefix)
        if found is None:
            found = self._under[prefix] = [kv for key, kv in self.view.items()
                                           if key.startswith(prefix)]
        return found

    def _view_changed(self, keys) -> None:
        """The view changed at ``keys`` (None: anywhere): what ``under`` found there goes."""
        if keys is None:
            self._under.clear()
            return
        for prefix in [p for p in self._under if any(k.startswith(p) for k in keys)]:
            del self._under[prefix]

    # ------------------------------------------------------------ join and leave
    async def join(self, timeout: float) -> None:
        """Register (raises ``EtcdError`` if etcd cannot be reached within ``timeout``), then
        renew and mirror in the background; returns once the view shows this node."""
        deadline = self.loop.time() + timeout
        while True:
            try:
                await self._register()
                break
            except EtcdError as exc:
                if self.loop.time() >= deadline:
                    raise EtcdError(f"cannot join the cluster: {exc}") from None
                await asyncio.sleep(0.5)
        self._tasks = [asyncio.create_task(self._renew(), name="etcd-lease"),
                       asyncio.create_task(self._mirror(), name="etcd-mirror")]
        while self.key not in self.view:
            try:
                await asyncio.wait_for(self.changed(), deadline - self.loop.time())
            except asyncio.TimeoutError:
                raise EtcdError("cannot join the cluster: own key not seen in etcd") from None

    async def leave(self) -> None:
        """Clean leave: say ``leaving``, revoke the lease (the keys go now, not after the
        TTL), stop renewing and mirroring."""
        self._leaving = True
        if self.disk is not None:
            self.disk.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._fence_timer:
            self._fence_timer.cancel()
        if self.holds_lease():
            try:
                self.info["state"] = "leaving"
                await self.etcd.put(self.key, json.dumps(self.info), self.lease)
                await self.etcd.revoke(self.lease)
                log.info("node %s left the cluster", self.name)
            except EtcdError as exc:
                log.warning("leaving: %s (the lease expires by itself within %ss)",
                            exc, self.ttl)
        self.lease = 0

    async def _register(self) -> None:
        if self.disk_stalled:
            raise EtcdError("the data directory's disk does not answer: not registering")
        if self.lease:
            # fenced while etcd may still hold the old lease (a renewal that reached a paused
            # etcd late can even have extended it): end it, so its election key cannot keep
            # the controller's place for nobody until it expires
            await self.etcd.revoke(self.lease)
            self.lease = 0
        sent = self.loop.time()
        lease, ttl = await self.etcd.grant(self.ttl)
        self.info["state"] = "running"
        self.registered_at = await self.etcd.put(self.key, json.dumps(self.info), lease)
        self.lease = lease
        self._extend(sent, ttl)
        log.info("node %s registered in etcd (lease %x, ttl %ss)", self.name, lease, ttl)
        for cb in list(self.on_lease):
            await cb(lease)
        if self._tasks and self.fenced.is_set():
            # back from a cut: the watch may have died silently with it; list afresh
            self._tasks[1].cancel()
            self._tasks[1] = asyncio.create_task(self._mirror(), name="etcd-mirror")
        if self.disk_stalled:           # stalled again while registering: revoke, fence
            await self.etcd.revoke(lease)
            self.lease = 0
            raise EtcdError("the data directory's disk does not answer")
        self._unfence_when_seen()

    def _unfence_when_seen(self) -> None:
        """Unfenced once the mirror has seen this registration's put: ``holds_lease()``
        asks for that too, and a node that said "no longer fenced" while its view still
        lagged (a watch listed afresh after a cut) was unfenced without holding its lease."""
        self._unfence_pending = self.revision < self.registered_at
        if not self._unfence_pending:
            self._set_fenced(False)

    # ------------------------------------------------------------ the lease
    def _extend(self, sent: float, ttl: int) -> None:
        self.deadline = sent + ttl
        if self._fence_timer:
            self._fence_timer.cancel()
        self._fence_timer = self.loop.call_at(self.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        if not self.holds_lease() and not self._leaving:
            self._set_fenced(True, "no lease renewal answered within the lease TTL "
                                   f"({self.ttl}s): etcd unreachable")

    def _set_fenced(self, fenced: bool, why: str = "") -> None:
        if fenced:
            self._unfence_pending = False
        if fenced == self.fenced.is_set():
            return
        if fenced:
            self.fenced.set()
            log.error("node %s is FENCED: %s", self.name, why)
        else:
            self.fenced.clear()
            log.warning("node %s is no longer fenced: lease %x held", self.name, self.lease)
        for cb in list(self.on_fence):
            cb(fenced)
        self._notify()

    async def _renew(self) -> None:
        interval = max(self.ttl / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            sent = self.loop.time()
            try:
                if self.lease and (not self.fenced.is_set() or self._unfence_pending):
                    ttl = await self.etcd.keep_alive(self.lease, timeout=interval)
                    if ttl > 0:
                        self._extend(sent, ttl)
                        continue
                    self.lease = 0
                    self._set_fenced(True, "etcd says the lease has expired")
                await self._register()          # fenced: a new lease, the key again
            except EtcdError as exc:
                log.debug("lease renewal failed: %s", exc)
                self._deadline_passed()
            except Exception:           # a bug must not end renewals for good: say, go on
                log.exception("lease renewal")
                self._deadline_passed()

    # ------------------------------------------------------------ the view
    async def _mirror(self) -> None:
        while True:
            try:
                kvs, revision = await self.etcd.range(PREFIX)
                self.view = {kv.key: kv for kv in kvs}
                self._view_changed(None)
                self.revision = revision
                self._seen()
                self._notify()
                async for revision, events in self.etcd.watch(PREFIX, revision + 1):
                    for ev in events:
                        if ev.type == "DELETE":
                            self.remove(ev.kv.key)
                        else:
                            self.view[ev.kv.key] = ev.kv
                    keys = {ev.kv.key for ev in events}
                    self._view_changed(keys)
                    self.revision = revision
                    self._seen()
                    self._notify(keys)
            except EtcdError as exc:
                log.debug("etcd watch: %s; listing again", exc)
                await asyncio.sleep(0.3)
            except Exception:           # an answer we could not read: list again
                log.exception("etcd watch")
                await asyncio.sleep(0.3)

    def remove(self, key: str) -> None:
        """A key the watch deleted leaves the view; a node's keeps its last value in
        ``departed``."""
        kv = self.view.pop(key, None)
        if kv is not None and key.startswith(NODES):
            self.departed[key[len(NODES):]] = kv.value

    def _seen(self) -> None:
        if self._unfence_pending and self.revision >= self.registered_at:
            self._unfence_pending = False
            self._set_fenced(False)

    def _notify(self, touched: set[str] | None = None) -> None:
        self.touched = touched
        for cb in list(self.on_view):
            cb()
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    def changed(self) -> asyncio.Future:
        """A future done at the next change of the view or of fencing. Registered at once,
        not when first awaited: ``wait_for(m.changed(), t)`` wrapped a coroutine in a task
        that registered only when it first ran, and a change that came in between was
        missed (the waiter then slept through it)."""
        f = self.loop.create_future()
        self._waiters.append(f)
        return f


class DiskHeartbeat:
    """Is the data directory's disk answering? A thread rewrites and fsyncs
    ``cluster-disk-heartbeat`` every ``ttl / 10`` seconds; a watcher thread calls
    ``on_stall(why)`` once when one write-and-fsync has been pending (or failing) for
    ``ttl / 2``, and ``on_answer()`` once when one completes again. Threads, not tasks: the
    event loop may itself be blocked on the stalled disk, and the watcher must still act.
    Both are daemon threads: a heartbeat stuck in the kernel must not hold up the exit."""

    FILE = "cluster-disk-heartbeat"

    def __init__(self, data_dir: str, ttl: float, on_stall, on_answer):
        self.path = os.path.join(data_dir, self.FILE)
        self.interval = max(ttl / 10, 0.1)
        self.limit = ttl / 2
        self.on_stall, self.on_answer = on_stall, on_answer
        self.pending_since = 0.0        # monotonic start of the beat under way; 0: none
        self.error = ""                 # the last beat's failure, if it failed
        self.stalled = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._beat, name="disk-heartbeat", daemon=True),
                         threading.Thread(target=self._watch, name="disk-watch", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=1.0)         # one stuck in an fsync stays behind (daemon)

    def _beat(self) -> None:
        fd = -1
        try:
            while not self._stop.is_set():
                self.pending_since = time.monotonic()
                try:
                    if fd < 0:
                        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                    os.pwrite(fd, b"%020d" % time.time_ns(), 0)
                    os.fsync(fd)
                except OSError as exc:      # a failing disk is as bad as a stalled one:
                    self.error = str(exc)   # pending_since stays, so it ages into a stall
                else:
                    self.pending_since, self.error = 0.0, ""
                self._stop.wait(self.interval)
        finally:
            if fd >= 0:
                os.close(fd)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval / 2):
            since = self.pending_since
            pending = time.monotonic() - since if since else 0.0
            if pending > self.limit and not self.stalled:
                self.stalled = True
                self.on_stall(f"the data directory's disk has not completed a write and "
                              f"fsync of {self.path} for {pending:.1f}s"
                              + (f" ({self.error})" if self.error else ""))
            elif not since and self.stalled:
                self.stalled = False
                self.on_answer()
