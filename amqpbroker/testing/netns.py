"""Network namespaces for cluster tests that cut nodes off (root only; ``ip`` from iproute2).

One bridge in the root namespace (where etcd and the test's clients run) with the address
``10.<a>.<b>.1/24``; each node gets its own namespace and a veth pair, one end in the
namespace (``10.<a>.<b>.<10 + i>``, with ``lo`` up), the other a port of the bridge. A node
runs under ``ip netns exec`` and listens on its address only. ``cut(name)`` sets the
node's bridge port down: its packets go nowhere, so every TCP connection to it (etcd's,
the other nodes', the clients') hangs rather than resets, as a pulled cable does;
``heal(name)`` sets it up again (and removes any partial cut).

Partial cuts are ``nft`` drop rules (nftables; ``.ci/run`` installs it) in a table of the
node's own namespace, on its input and output hooks, so the packets vanish in both
directions and TCP hangs there too (a drop, never a reject): ``cut_from_etcd(name, port)``
drops the node's traffic with etcd (the bridge address, etcd's client port) and nothing
else, so it still reaches the other nodes and the clients reach it; ``cut_from_peers(name)``
drops its traffic with every other node's address, so it still talks to etcd (and keeps its
lease) and the clients, which connect from the bridge address, still reach it. The subnet
and the names derive from this process's pid, so concurrent test runs do not collide;
``destroy()`` deletes everything ``create()`` made (deleting a namespace deletes its veth
pair)."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess

CUT_TABLE = "amqpbroker_cut"        # the nft table of a partial cut, in the node's namespace


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def nft_available() -> bool:
    """``nft`` is installed (partial cuts need it; a whole cut needs only ``ip``)."""
    return shutil.which("nft") is not None


def available() -> bool:
    """Root and a working ``ip netns``."""
    if os.geteuid() != 0:
        return False
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


_LABS = itertools.count()


class NetnsLab:
    def __init__(self, names: list[str]):
        pid = os.getpid()
        # interface names: at most 15 bytes; unique per lab, since a namespace's deletion
        # frees its veth pair only later (a second lab of one process hit "File exists")
        self.tag = f"a{pid % 100000}x{next(_LABS) % 100}"
        self.subnet = f"10.{200 + pid % 50}.{pid // 50 % 250}"
        self.bridge = f"{self.tag}br"
        self.bridge_addr = f"{self.subnet}.1"
        self.names = list(names)
        self._made: list[str] = []

    def namespace(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def addr(self, name: str) -> str:
        return f"{self.subnet}.{10 + self.names.index(name)}"

    def port(self, name: str) -> str:
        return f"{self.tag}{name}h"

    def wrap(self, name: str) -> list[str]:
        """The command prefix that runs a program inside ``name``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def create(self) -> "NetnsLab":
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append("bridge")
            _ip("addr", "add", f"{self.bridge_addr}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for name in self.names:
                ns, port, inner = self.namespace(name), self.port(name), f"{self.tag}{name}n"
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("link", "add", port, "type", "veth", "peer", "name", inner)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", port, "master", self.bridge)
                _ip("link", "set", port, "up")
                _ip("-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", inner)
                _ip("-n", ns, "link", "set", inner, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def cut(self, name: str) -> None:
        _ip("link", "set", self.port(name), "down")

    def cut_from_etcd(self, name: str, etcd_port: int) -> None:
        """Drop ``name``'s packets with etcd only (its client port on the bridge address)."""
        self._drop(name, f"ip daddr {self.bridge_addr} tcp dport {etcd_port}",
                   f"ip saddr {self.bridge_addr} tcp sport {etcd_port}")

    def cut_from_peers(self, name: str) -> None:
        """Drop ``name``'s packets with every other node (etcd and the clients still reach
        it: they are on the bridge address)."""
        peers = ", ".join(self.addr(n) for n in self.names if n != name)
        self._drop(name, f"ip daddr {{ {peers} }}", f"ip saddr {{ {peers} }}")

    def _drop(self, name: str, out_match: str, in_match: str) -> None:
        """One nft table in ``name``'s namespace dropping what matches, both ways: the
        output hook for what it sends, the input hook for what it receives."""
        script = (f"table inet {CUT_TABLE} {{\n"
                  f"  chain out {{ type filter hook output priority 0; {out_match} drop; }}\n"
                  f"  chain in {{ type filter hook input priority 0; {in_match} drop; }}\n"
                  f"}}\n")
        subprocess.run([*self.wrap(name), "nft", "-f", "-"], input=script.encode(),
                       check=True, capture_output=True, timeout=30)

    def heal(self, name: str) -> None:
        """Undo any cut of ``name``: its bridge port up, its nft table (if any) gone."""
        _ip("link", "set", self.port(name), "up")
        subprocess.run([*self.wrap(name), "nft", "delete", "table", "inet", CUT_TABLE],
                       capture_output=True, timeout=30)    # no table (a whole cut): fine

    def destroy(self) -> None:
        for made in reversed(self._made):
            if made == "bridge":
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            else:       # the veth pair first: deleting one end deletes both, at once
                name = made[len(self.tag) + 1:]
                subprocess.run(["ip", "link", "del", self.port(name)], capture_output=True)
                subprocess.run(["ip", "netns", "del", made], capture_output=True)
        self._made.clear()

    def __enter__(self) -> "NetnsLab":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()
