"""A TCP fault proxy: forwards a client to the broker, and cuts or stalls it on demand.

Modelled on the proxy in aiormq's tests. Clients connect to ``proxy.port``; every accepted
connection gets its own upstream socket and two pump threads (client→server, server→client).
Faults apply to connections accepted after they are set, and ``stall`` also to live ones:

* ``cut_after(n, direction)``: forward exactly ``n`` bytes in that direction (counted per
  connection; ``"both"`` counts the two directions together), then close both sockets with an
  RST, as a pulled cable or a killed peer looks to the broker.
* ``stall()`` / ``resume()``: stop forwarding (bytes stay in the kernel buffers) without closing
  anything, e.g. to go past a heartbeat timeout.
* ``cut_all()``: reset every live connection now.

Threads rather than asyncio so that blocking clients (pika) and asyncio clients can use it
alike; it runs no event loop of its own and needs no cooperation from the test's loop.
"""
from __future__ import annotations

import socket
import struct
import threading

UPSTREAM = "client_to_server"
DOWNSTREAM = "server_to_client"
BOTH = "both"
_LINGER_RST = struct.pack("ii", 1, 0)     # SO_LINGER on, 0 s: close() sends RST


class _Link:
    """One proxied client connection and its byte budget."""

    def __init__(self, proxy: "FaultProxy", client: socket.socket, server: socket.socket,
                 cut_after: int | None, cut_direction: str):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.cut_after = cut_after
        self.cut_direction = cut_direction
        self.forwarded = {UPSTREAM: 0, DOWNSTREAM: 0}
        self.cut = False
        self.lock = threading.Lock()
        self.closed = False

    def budget(self, direction: str, want: int) -> int:
        """How many of ``want`` bytes may go through in ``direction`` before the cut."""
        if self.cut_after is None or self.cut_direction not in (direction, BOTH):
            return want
        if self.cut_direction == BOTH:
            used = self.forwarded[UPSTREAM] + self.forwarded[DOWNSTREAM]
        else:
            used = self.forwarded[direction]
        return max(0, min(want, self.cut_after - used))

    def pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.proxy._running.wait()           # stall: hold the bytes here
                with self.lock:
                    n = self.budget(direction, len(data))
                    self.forwarded[direction] += n
                if n:
                    dst.sendall(data[:n])
                if n < len(data) or (self.cut_after is not None
                                     and self.budget(direction, 1) == 0):
                    self.cut = True
                    break
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.cut:
                self.proxy.cuts += 1
        self.proxy._forget(self)        # before the sockets close: whoever sees the EOF sees
        for s in (self.client, self.server):         # the link gone and counted
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                s.shutdown(socket.SHUT_RD)           # wakes the other pump's recv(); sends nothing
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``(target_host, target_port)`` with injectable faults."""

    def __init__(self, target_host: str, target_port: int, *, cut_after: int | None = None,
                 direction: str = BOTH, listen_port: int = 0):
        self.listen_port = listen_port      # 0: a free port, read ``port`` after start()
        self.target = (target_host, target_port)
        self._cut_after = cut_after
        self._direction = direction
        self._running = threading.Event()
        self._running.set()
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0
        self.cuts = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "FaultProxy":
        self._listener = socket.create_server((self.host, self.listen_port))
        self.port = self._listener.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Close the listener and reset every live connection; join the threads."""
        self._running.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        self.cut_all()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- faults
    def cut_after(self, n: int | None, direction: str = BOTH) -> None:
        """Connections accepted from now on are reset after ``n`` bytes (None: never)."""
        if direction not in (UPSTREAM, DOWNSTREAM, BOTH):
            raise ValueError(f"direction must be {UPSTREAM!r}, {DOWNSTREAM!r} or {BOTH!r}")
        self._cut_after, self._direction = n, direction

    def stall(self) -> None:
        """Stop forwarding on all connections (nothing is closed)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cut_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._links)

    # ----------------------------------------------------------------- internals
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server, self._cut_after, self._direction)
            with self._lock:
                self._links.add(link)
                self.accepted += 1
            for src, dst, direction in ((client, server, UPSTREAM), (server, client, DOWNSTREAM)):
                t = threading.Thread(target=link.pump, args=(src, dst, direction),
                                     name=f"fault-proxy-{direction}", daemon=True)
                t.start()
                self._threads.append(t)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
