"""A local cluster: one etcd and N broker nodes on loopback, for development and tests.

    python -m amqpbroker.testing.cluster --nodes 3

starts etcd and nodes ``n1`` … ``nN`` on free ports, data under one temporary directory,
prints how to reach each, and on Ctrl-C (or SIGTERM) stops every process it started, by
pid, and removes the directory. In a test::

    with LocalCluster(3, lease_ttl=3) as cluster:
        cluster.wait_until(lambda: len(cluster.nodes_seen_by(cluster.nodes[0])) == 3)

Each node is a ``BrokerProcess`` (its own process session, stopped by pid), the etcd an
``EtcdProcess``; nodes start one after the other (or, ``together``, the others at once after
``n1``), so ``n1`` stands first and becomes the controller. ``heal()`` starts again the nodes
a test killed or stopped and waits until the cluster is whole, so tests can share one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from .broker import LAYOUTS, BrokerProcess
from .etcd import EtcdProcess


# seconds for a node's ready line: a loaded machine (CI's test processes on 2 cores) can
# take half a minute to start a node of five processes
NODE_STARTUP_TIMEOUT = 60.0

# per-node process layouts of a cluster (``LocalCluster(layouts=...)``, cycled over the
# nodes): one process each; worker processes; workers and AMQP front-ends (the layout of a
# machine with 4 CPUs or more); mixed, n1 in one process beside n2 and n3 split
SPLIT = LAYOUTS["2 workers + 2 front-ends"]
CLUSTER_LAYOUTS = {"one": [LAYOUTS["one process"]], "workers": [("--workers", "2")],
                   "split": [SPLIT], "mixed": [LAYOUTS["one process"], SPLIT, SPLIT]}


class LocalCluster:
    def __init__(self, nodes: int = 3, base_dir: str | None = None, lease_ttl: int = 3,
                 args: tuple = (), netns=None, layouts: list | None = None,
                 together: bool = False):
        """``layouts``: per node, more ``serve`` arguments (its process layout, e.g.
        ``("--workers", "2", "--frontends", "2")``); cycled over the nodes. ``together``:
        ``n2`` … ``nN`` start at the same time once ``n1`` stands (faster; the order in
        which they join, and so the controller after ``n1``, is then not known)."""
        self.together = together
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="amqpbroker-cluster-")
        self.lease_ttl = lease_ttl
        self.netns = netns      # a created NetnsLab of nodes n1..nN: each node in its own
        self.etcd = EtcdProcess(os.path.join(self.base_dir, "etcd"),
                                host=netns.bridge_addr if netns else "127.0.0.1")
        os.makedirs(self.etcd.data_dir, exist_ok=True)
        self.nodes = [self._node(f"n{i + 1}", (*args, *(layouts[i % len(layouts)]
                                                       if layouts else ())))
                      for i in range(nodes)]

    def _node(self, name: str, args: tuple) -> BrokerProcess:
        node = BrokerProcess(os.path.join(self.base_dir, name), management=True,
                             startup_timeout=NODE_STARTUP_TIMEOUT,
                             **({"bind_host": self.netns.addr(name),
                                 "wrapper": self.netns.wrap(name)} if self.netns else {}))
        node.args = ["--node-name", name, "--cluster-port", "0",
                     "--cluster-lease-ttl", str(self.lease_ttl), *args]
        if self.netns:          # the test's clients reach guest from the bridge, not loopback
            node.args.append("--loopback-users=")
        return node

    def start(self) -> "LocalCluster":
        try:
            self.etcd.start()
            if self.together:
                self.start_node(self.nodes[0])
                self._each(self.start_node, self.nodes[1:])
            else:
                for node in self.nodes:
                    self.start_node(node)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: BrokerProcess) -> BrokerProcess:
        """(Re)start a node against this cluster's etcd."""
        if "--cluster" not in node.args:
            node.args += ["--cluster", self.etcd.url]
        return node.start()

    def down(self) -> list[BrokerProcess]:
        """The nodes not running: killed, stopped, exited, or never started."""
        return [n for n in self.nodes if n.proc is None or n.proc.poll() is not None]

    def heal(self, timeout: float = 60.0) -> None:
        """Make the cluster whole again after a test that killed, stopped or paused nodes
        (so the next test can share it): SIGCONT to every node's processes, start the
        nodes that are down (at once, each in a thread), and wait until ``whole()``."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                try:            # its own process group: its workers and front-ends too
                    os.killpg(node.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self._each(self.start_node, self.down())
        self.wait_until(self.whole, timeout=timeout)

    def whole(self) -> bool:
        """Every node sees every node, none fenced, all the same controller; every
        replicated queue (as the first node lists them) has a leader and its members all in
        its ISR."""
        names = sorted(n.node for n in self.nodes)
        controllers = set()
        for node in self.nodes:
            seen = self.nodes_seen_by(node)
            if sorted(n["node_name"] for n in seen) != names or any(n["fenced"] for n in seen):
                return False
            controllers.add(self.controller_seen_by(node))
        if len(controllers) != 1 or None in controllers:
            return False
        return all(q.get("leader") and len(q["isr"]) == len(q["members"])
                   for q in self.nodes[0].api("queues") if "isr" in q)

    @staticmethod
    def _each(start, nodes: list[BrokerProcess]) -> None:
        """``start(node)`` for each node at once, each in a thread; the first error raised
        once all ended."""
        errors: list[BaseException] = []

        def run(node: BrokerProcess) -> None:
            try:
                start(node)
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop every node (SIGTERM, waited for), then etcd; remove the data. The nodes stop
        at the same time, each waited for by a thread (one after the other, each leave would
        move the controller and the leaderships to a node about to leave too). A node that
        fails to stop does not keep the others or etcd running: the first error is raised
        once all were stopped."""
        errors: list[BaseException] = []

        def stop(node: BrokerProcess) -> None:
            try:
                node.stop()
            except Exception as exc:
                errors.append(exc)
        threads = [threading.Thread(target=stop, args=(node,))
                   for node in self.nodes if node.proc is not None]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        error = errors[0] if errors else None
        self.etcd.cleanup()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if error is not None:
            raise error

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ looking
    @staticmethod
    def nodes_seen_by(node: BrokerProcess) -> list[dict]:
        """``/api/nodes`` of one node."""
        return node.api("nodes")

    def controller_seen_by(self, node: BrokerProcess) -> str | None:
        names = [n["node_name"] for n in self.nodes_seen_by(node) if n["controller"]]
        return names[0] if len(names) == 1 else None

    def node(self, name: str) -> BrokerProcess:
        return self.nodes[int(name[1:]) - 1]

    @staticmethod
    def wait_until(condition, timeout: float = 30.0, interval: float = 0.05):
        """Poll ``condition`` until it returns something true; return that (else raise)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = condition()
            except OSError as exc:          # a node between stop and start
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m amqpbroker.testing.cluster",
                                description="etcd and N amqpbroker nodes on loopback; "
                                            "Ctrl-C stops them all")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5,
                   help="seconds before a silent node counts as lost (default 5)")
    p.add_argument("--data-dir", help="keep the data here (default: a temporary directory, "
                                      "removed on exit)")
    args, extra = p.parse_known_args(argv)      # the rest goes to every node's `serve`
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(args.nodes, args.data_dir, args.lease_ttl, tuple(extra))
    cluster.start()
    try:
        print(f"etcd   {cluster.etcd.url}  (pid {cluster.etcd.pid})")
        for node in cluster.nodes:
            print(f"{node.node:<6} amqp://guest:guest@127.0.0.1:{node.port}/  "
                  f"management http://127.0.0.1:{node.management_port}/  "
                  f"cluster port {node.cluster_port}  (pid {node.proc.pid})")
        print(f"data   {cluster.base_dir}")
        print(f"nodes  amqpbroker ctl --url http://127.0.0.1:{cluster.nodes[0].management_port}"
              " cluster")
        print("Ctrl-C stops everything.", flush=True)
        while not stop.wait(0.5):
            for node in cluster.nodes:
                if node.proc.poll() is not None:
                    print(f"{node.node} exited with {node.proc.returncode}", flush=True)
                    stop.set()
    finally:
        cluster.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
