"""This node's part in a cluster (``amqpbroker serve --cluster URL``), run by the supervisor.

It joins (``membership.py``: lease, registration, fencing, the mirror of etcd), stands for
controller (``controller.py``), listens on the cluster port, and describes the cluster for
``/api/nodes``. Without ``--cluster`` none of this exists and the broker is a single node,
as before.

The cluster port carries the link between nodes (``links/tcp.py``'s ``StreamEndpoint``
carrying the contract): ``forward.py`` forwards a queue's commands to the node leading its
partition, and serves other nodes' links to the queues this node leads (step 4 of
docs/CLUSTER.md); replication (step 5) uses the same link. Both work in every process
layout: the registration names the node's worker count, so a caller links to the worker
hosting a queue (docs/CLUSTER.md "As built (layouts)").
"""
from __future__ import annotations

import asyncio
import logging
import socket

from .controller import Controller
from .etcd import EtcdClient, EtcdError
from .membership import Membership

log = logging.getLogger("amqpbroker.cluster")


def display_name(node: str) -> str:
    """The node's name as the management API shows it, RabbitMQ's ``prefix@host`` shape."""
    return node if "@" in node else f"amqpbroker@{node}"


class ClusterNode:
    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.node_name or socket.gethostname().split(".")[0]
        self.etcd = EtcdClient(cfg.cluster)
        self.membership: Membership | None = None
        self.controller: Controller | None = None
        self.cluster_port = 0
        self._listener: asyncio.AbstractServer | None = None
        self.metadata = None                # metadata.EtcdMetadata, once attached
        self.placement = None               # placement.Placement, once joined
        self.broker = None
        self.forwarder = None               # forward.Forwarder, once attached
        self.replication = None             # replication.Replication, once attached

    def attach(self, broker) -> None:
        """Before the broker serves: its metadata becomes etcd's (``metadata.py``); changes
        wait until ``start`` has joined and caught up."""
        from .forward import Forwarder
        from .metadata import EtcdMetadata
        from .replication import Replication
        self.broker = broker
        self.forwarder = Forwarder(self, broker)
        self.replication = self.forwarder.replication = Replication(self, broker,
                                                                    self.forwarder)
        self.metadata = broker.metadata = EtcdMetadata(broker, self)

    @property
    def display_name(self) -> str:
        return display_name(self.name)

    @property
    def fenced(self) -> asyncio.Event:
        """Set while this node is fenced (membership.py: the data layer's hook)."""
        return self.membership.fenced

    def holds_lease(self) -> bool:
        return self.membership is not None and self.membership.holds_lease()

    async def start(self, amqp_port: int, management_port: int) -> None:
        """Listen on the cluster port, join, stand for controller. An etcd that cannot be
        reached within ``--cluster-join-timeout`` is an ``OSError`` (the start fails in one
        line)."""
        cfg = self.cfg
        accept = self.forwarder.accept if self.forwarder is not None else _refuse
        for w in getattr(self.broker, "workers", None) or ():
            w.lost_listeners.append(self.forwarder.worker_lost)
            w.back_listeners.append(self.forwarder.worker_back)
        self._listener = await asyncio.start_server(accept, cfg.host or None,
                                                    cfg.cluster_port)
        self.cluster_port = self._listener.sockets[0].getsockname()[1]
        host = cfg.advertise_host or (cfg.host if cfg.host not in ("", "0.0.0.0", "::")
                                      else socket.getfqdn())
        info = {"host": host, "amqp_port": amqp_port, "management_port": management_port,
                "cluster_port": self.cluster_port,
                # how many processes host queues (1: the supervisor): a queue's is
                # broker.worker_of(vhost, name, workers), for other nodes' links
                "workers": len(self.broker.partitions) if self.broker is not None else 1}
        self.membership = Membership(self.etcd, self.name, info, cfg.cluster_lease_ttl)
        self.controller = Controller(self.membership)
        from .placement import Placement
        self.placement = Placement(self)
        # a disk that stops answering fences this node as a lost lease does (LavinMQ #2151)
        self.membership.watch_disk(cfg.data_dir)
        try:
            await self.membership.join(cfg.cluster_join_timeout)
            if self.metadata is not None:
                await self.metadata.start()
            if self.forwarder is not None:   # after the metadata's: its queues exist
                # replication first: a replica that becomes the leader reopens its copy
                # before the forwarder points the queue back at it
                self.membership.on_view.append(self.replication.follow_view)
                self.membership.on_view.append(self.forwarder.follow_view)
                groups = getattr(self.broker, "groups", None)
                if groups is not None:      # consumer groups: one coordinator (groups.py)
                    groups.term_of = self.forwarder.leader_epoch
                    self.membership.on_view.append(groups.follow_coordinators)
                    self.forwarder.on_link.append(groups.follow_coordinators)
                    # a link back to a node that restarted: its worker lost the group
                    # state of the partitions it leads, as a restarted local worker does
                    self.forwarder.on_link.append(groups.worker_back)
                self.replication.review()
                self.forwarder.review()
                self.replication.start_workers()
        except EtcdError as exc:
            await self.close()
            raise OSError(f"{exc} (--cluster {cfg.cluster})") from None

    async def leave(self) -> None:
        """A clean leave (SIGTERM): the others see this node go at once."""
        if self.membership is not None:
            await self.membership.leave()
        await self.close()

    async def close(self) -> None:
        if self.membership is not None and self.membership.disk is not None:
            self.membership.disk.stop()
        if self.replication is not None:
            await self.replication.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.metadata is not None:
            await self.metadata.close()
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        await self.etcd.close()

    def nodes(self) -> list[dict]:
        """Every live node as this node's mirror of etcd shows it, this one included (a fenced
        node shows the last view it had, itself marked fenced)."""
        m, leader = self.membership, self.controller.leader()
        fenced = m.fenced.is_set()
        found = m.nodes()
        found.setdefault(self.name, m.info)     # fenced: our key may be gone
        leads, holds = {}, {}
        draining = self.placement.draining() if self.placement else set()
        for p in (self.placement.partitions().values() if self.placement else ()):
            if p.get("leader"):
                leads[p["leader"]] = leads.get(p["leader"], 0) + 1
            for r in p["replicas"]:
                holds[r] = holds.get(r, 0) + 1
        out = []
        for name, reg in sorted(found.items()):
            me = name == self.name
            out.append({
                "name": display_name(name), "type": "disc",
                "running": reg.get("state") == "running" or me,
                # ours
                "node_name": name, "state": "fenced" if me and fenced else reg.get("state"),
                "fenced": fenced if me else False,
                "controller": (self.controller.is_controller() if me
                               else leader == name and not fenced),
                "host": reg.get("host"), "amqp_port": reg.get("amqp_port"),
                "management_port": reg.get("management_port"),
                "cluster_port": reg.get("cluster_port"),
                "started": reg.get("started"),
                # partitions (placement.py) this node leads, and holds a replica of
                "partitions_led": leads.get(name, 0), "partition_replicas": holds.get(name, 0),
                "draining": name in draining})     # ctl drain (placement.py)
        return out


    def queue_placement(self, vhost: str, name: str) -> dict:
        """RabbitMQ's quorum-queue fields of a queue object (``/api/queues``): ``leader``,
        ``members``, ``online`` (the members that are live nodes), from its partition state
        (partition 0; a topic's partition queue, its own); ours: ``leader_epoch``, ``isr``."""
        p = self.placement.of_queue(vhost, name) if self.placement is not None else None
        if p is None:
            return {}
        alive = self.membership.nodes()
        return {"leader": display_name(p["leader"]) if p.get("leader") else None,
                "members": [display_name(r) for r in p["replicas"]],
                "online": [display_name(r) for r in p["replicas"] if r in alive],
                "leader_epoch": p["leader_epoch"], "isr": [display_name(r) for r in p["isr"]]}


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
