"""Soak: mixed load with random client faults against a broker this script starts, and the
broker's resources over time. Not part of CI.

    python bench/soak.py --minutes 60                       # the default process layout
    python bench/soak.py --minutes 60 --workers 2 --frontends 2 --markdown out.md

Theory of operation
-------------------
One broker (``BrokerProcess``, loopback, a temporary data directory, management on) and a set
of client threads, each a loop bounded by the deadline and by an iteration count:

* publishers (pika, publisher confirms) into durable and transient queues, directly and
  through a topic exchange with CC headers;
* consumers with manual acks and with auto-ack, which now and then drop their connection
  without closing it;
* churn: exclusive, auto-delete and named queues and exchanges declared, bound, used, deleted;
* the management API: reads of every listing, and vhosts, users and permissions created and
  deleted;
* faults: pika clients behind the fault proxy (``amqpbroker.testing.FaultProxy``) cut after
  2^k bytes, the proxy stalled past a heartbeat, raw sockets that stop half-way through a
  frame and reset, that stop reading while deliveries pile up, or that never say anything.

Every ``--interval`` seconds the main thread samples each process of the broker's session
(supervisor, workers, front-ends, restarted ones too): RSS, open descriptors, sockets, and the
AMQP connections the management API lists for it, and prints a table row. At the end the load
stops, the connections drain, and the verdict compares, per process, the mean of the last
third of the samples with the first third (after ``--warmup``): RSS within 15 % or 16 MiB,
descriptors within 25 % or 32; a process that restarted, a connection left open after the
clients are gone, or a quiet broker holding more descriptors than at the start is a failure.
Exit status 0 when flat. Each RSS line also gives the least-squares slope of the last third
(MiB a minute): a margin that a long run's growth has not used up yet is not flatness, the
slope says whether it is still rising. Every message goes to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pika
import pika.exceptions
from pamqp import commands as C
from pamqp import frame as pframe

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from amqpbroker.testing import BrokerProcess, FaultProxy  # noqa: E402
from amqpbroker.testing.leaks import session_members  # noqa: E402

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
QUEUES = [f"soak.q{i}" for i in range(4)]
MAX_LENGTH = 20000                      # every soak queue is bounded: RSS must not follow depth
ITERATIONS = 1_000_000                  # the second bound on every loop, besides the deadline
MIB = 1024 * 1024


class Soak:
    def __init__(self, broker: BrokerProcess, seconds: float, seed: int):
        self.broker = broker
        self.end = time.monotonic() + seconds
        self.stop = threading.Event()
        self.seed = seed
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.proxy = FaultProxy(broker.host, broker.port).start()

    # ------------------------------------------------------------------ plumbing
    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.end

    def loop(self, name: str, body, rng: random.Random) -> None:
        """Run ``body(rng)`` until the deadline (at most ITERATIONS times); count errors."""
        for _ in range(ITERATIONS):
            if not self.running():
                return
            try:
                body(rng)
            except (pika.exceptions.AMQPError, OSError, urllib.error.URLError,
                    ConnectionError, socket.timeout) as exc:
                self.count(f"{name}: {type(exc).__name__}")
                self.stop.wait(0.2)

    def connect(self, via_proxy: bool = False, heartbeat: int = 10):
        port = self.proxy.port if via_proxy else self.broker.port
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, heartbeat=heartbeat, blocked_connection_timeout=30,
            socket_timeout=10, connection_attempts=1))

    def api(self, method: str, path: str, body=None) -> int:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.broker.management_port}/api/{path}", data=data,
            method=method, headers={
                "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    def api_json(self, path: str):
        return self.broker.api(path)

    # ------------------------------------------------------------------ actors
    def setup(self) -> None:
        conn = self.connect()
        ch = conn.channel()
        for i, q in enumerate(QUEUES):
            ch.queue_declare(q, durable=i % 2 == 0, arguments={"x-max-length": MAX_LENGTH})
        ch.queue_declare("soak.stall", arguments={"x-max-length": 2000})
        ch.exchange_declare("soak.topic", "topic", durable=True)
        ch.queue_bind(QUEUES[0], "soak.topic", "a.#")
        ch.queue_bind(QUEUES[1], "soak.topic", "*.b")
        conn.close()

    def publisher(self, rng: random.Random) -> None:
        conn = self.connect()
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            for _ in range(rng.randint(20, 200)):
                if not self.running():
                    break
                for _ in range(20):
                    body = rng.randbytes(rng.choice([16, 200, 2000, 20000]))
                    persistent = rng.random() < 0.5
                    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
                    if rng.random() < 0.3:
                        props.headers = {"CC": [rng.choice(QUEUES)], "n": rng.getrandbits(40)}
                        ch.basic_publish("soak.topic", rng.choice(["a.x", "x.b", "a.b"]), body,
                                         props)
                    else:
                        ch.basic_publish("", rng.choice(QUEUES + ["soak.stall"]), body, props)
                self.count("published", 20)
                self.stop.wait(rng.uniform(0.02, 0.1))
        finally:
            if conn.is_open:
                conn.close()

    def consumer(self, rng: random.Random, auto_ack: bool) -> None:
        conn = self.connect()
        ch = conn.channel()
        ch.basic_qos(prefetch_count=rng.choice([1, 10, 100]))
        got = [0]

        def on_message(channel, method, _props, _body):
            got[0] += 1
            if not auto_ack:
                if rng.random() < 0.05:
                    channel.basic_nack(method.delivery_tag, requeue=rng.random() < 0.5)
                else:
                    channel.basic_ack(method.delivery_tag)
        for q in rng.sample(QUEUES, 2):
            ch.basic_consume(q, on_message, auto_ack=auto_ack)
        until = time.monotonic() + rng.uniform(5, 30)
        for _ in range(1000):
            if not self.running() or time.monotonic() > until:
                break
            conn.process_data_events(time_limit=0.5)
        self.count("consumed", got[0])
        if rng.random() < 0.3:                      # vanish without connection.close
            _reset(conn._impl._transport._sock)     # pika's socket (no public handle)
            self.count("fault: consumer vanished")
        else:
            conn.close()

    def churn(self, rng: random.Random) -> None:
        conn = self.connect()
        ch = conn.channel()
        for _ in range(rng.randint(5, 30)):
            if not self.running():
                break
            tag = f"soak.churn.{rng.getrandbits(32):x}"
            kind = rng.choice(["exclusive", "auto_delete", "named", "exchange"])
            if kind == "exchange":
                ch.exchange_declare(tag, rng.choice(["direct", "fanout", "topic", "headers"]))
                ch.exchange_bind(tag, "soak.topic", "a.*")
                ch.basic_publish(tag, "k", b"x")
                ch.exchange_delete(tag)
            else:
                q = ch.queue_declare(tag if kind == "named" else "", durable=kind == "named",
                                     exclusive=kind == "exclusive",
                                     auto_delete=kind == "auto_delete").method.queue
                ch.queue_bind(q, "soak.topic", rng.choice(["a.#", "#", "x.*"]))
                for _ in range(rng.randint(0, 20)):
                    ch.basic_publish("", q, b"churn")
                ch.basic_get(q, auto_ack=True)
                ch.queue_delete(q)
            self.count("churned")
        conn.close()

    def management(self, rng: random.Random) -> None:
        for path in ("overview", "queues", "exchanges", "connections", "nodes", "vhosts"):
            self.api("GET", path)
        v = f"soak-v{rng.randrange(4)}"
        u = f"soak-u{rng.randrange(4)}"
        statuses = [self.api("PUT", f"vhosts/{v}", {"description": "soak"}),
                    self.api("PUT", f"users/{u}", {"password": "p", "tags": "management"}),
                    self.api("PUT", f"permissions/{v}/{u}",
                             {"configure": ".*", "write": ".*", "read": ".*"})]
        if rng.random() < 0.5:
            statuses += [self.api("DELETE", f"users/{u}"), self.api("DELETE", f"vhosts/{v}")]
        bad = [s for s in statuses if s >= 500]
        self.count("management calls", len(statuses) + 6)
        if bad:
            self.count("management 5xx", len(bad))
        self.stop.wait(rng.uniform(0.5, 2))

    # ------------------------------------------------------------------ faults
    def fault(self, rng: random.Random) -> None:
        kind = rng.choice(["cut", "cut", "half_frame", "stalled_reader", "silent",
                           "proxy_stall"])
        getattr(self, "_" + kind)(rng)
        self.count(f"fault: {kind}")
        self.stop.wait(rng.uniform(0.2, 2))

    def _cut(self, rng: random.Random) -> None:
        """A pika client behind the proxy, cut after 2^k bytes in either direction."""
        self.proxy.cut_after(2 ** rng.randint(6, 18), rng.choice(
            ["client_to_server", "server_to_client", "both"]))
        try:
            conn = self.connect(via_proxy=True)
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_consume(rng.choice(QUEUES), lambda c, m, p, b: c.basic_ack(m.delivery_tag))
            for _ in range(200):
                ch.basic_publish("", rng.choice(QUEUES), rng.randbytes(1000))
                conn.process_data_events(time_limit=0)
            conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass                                     # the cut, as intended
        finally:
            self.proxy.cut_after(None)

    def _raw(self, timeout: float = 10.0) -> socket.socket:
        """A raw socket through the handshake, channel 1 open; replies left unread."""
        s = socket.create_connection((self.broker.host, self.broker.port), timeout=timeout)
        s.sendall(PROTOCOL_HEADER)
        _read_some(s)
        s.sendall(pframe.marshal(C.Connection.StartOk(
            client_properties={"product": "soak"}, mechanism="PLAIN",
            response="\0guest\0guest"), 0))
        _read_some(s)
        s.sendall(pframe.marshal(C.Connection.TuneOk(channel_max=16, frame_max=131072,
                                                     heartbeat=0), 0)
                  + pframe.marshal(C.Connection.Open(virtual_host="/"), 0)
                  + pframe.marshal(C.Channel.Open(), 1))
        _read_some(s)
        return s

    def _half_frame(self, rng: random.Random) -> None:
        s = self._raw()
        frames = (pframe.marshal(C.Basic.Publish(exchange="", routing_key=QUEUES[1]), 1)
                  + struct.pack(">BHI", 2, 1, 14) + struct.pack(">HHQH", 60, 0, 5000, 0)
                  + b"\xce" + struct.pack(">BHI", 3, 1, 5000) + b"x" * 2000)
        s.sendall(frames[:rng.randrange(1, len(frames))])
        self.stop.wait(rng.uniform(0, 2))
        _reset(s)

    def _stalled_reader(self, rng: random.Random) -> None:
        """Consume with no prefetch limit and never read: the broker must not buffer it all."""
        s = self._raw()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(pframe.marshal(C.Basic.Consume(queue="soak.stall", no_ack=True), 1))
        self.stop.wait(rng.uniform(5, 20))
        _reset(s)

    def _silent(self, rng: random.Random) -> None:
        s = socket.create_connection((self.broker.host, self.broker.port), timeout=10)
        if rng.random() < 0.5:
            s.sendall(PROTOCOL_HEADER[:rng.randrange(1, 8)])
        self.stop.wait(rng.uniform(1, 5))
        _reset(s)

    def _proxy_stall(self, rng: random.Random) -> None:
        """Clients behind the proxy go quiet past their heartbeat (3 s), then it resumes."""
        def quiet_client():
            try:
                conn = self.connect(via_proxy=True, heartbeat=3)
                for _ in range(30):
                    if not self.running():
                        break
                    conn.process_data_events(time_limit=0.5)
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass
        t = threading.Thread(target=quiet_client, daemon=True)
        t.start()
        self.stop.wait(1)
        self.proxy.stall()
        self.stop.wait(rng.uniform(7, 12))
        self.proxy.resume()
        t.join(30)

    # ------------------------------------------------------------------ run
    def start_actors(self) -> list[threading.Thread]:
        roles = ([("publisher", self.publisher)] * 2
                 + [("consumer-ack", lambda r: self.consumer(r, False))] * 2
                 + [("consumer-autoack", lambda r: self.consumer(r, True)),
                    ("churn", self.churn), ("management", self.management),
                    ("faults", self.fault), ("faults", self.fault)])
        threads = []
        for i, (name, body) in enumerate(roles):
            rng = random.Random(self.seed * 1000 + i)
            t = threading.Thread(target=self.loop, args=(name, body, rng), name=name,
                                 daemon=True)
            t.start()
            threads.append(t)
        return threads


def _read_some(s: socket.socket) -> None:
    try:
        s.recv(65536)
    except socket.timeout:
        pass


def _reset(s: socket.socket) -> None:
    """Close with an RST, as a killed client looks to the broker."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# ----------------------------------------------------------------------------- sampling

def process_sample(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = 0
        for fd in fds:
            try:
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
        return {"rss": rss, "fds": len(fds), "sockets": sockets}
    except (OSError, StopIteration):
        return None


def roles(broker: BrokerProcess) -> dict[int, str]:
    """pid -> role of every live process of the broker's session."""
    out = {broker.proc.pid: "supervisor"}
    try:
        node = broker.api("nodes")[0]
        for w in node.get("workers", []):
            out[w["pid"]] = f"worker{w['index']}"
        for fe in node.get("frontends", []):
            out[fe["pid"]] = f"frontend{fe['index']}"
    except (OSError, urllib.error.URLError, ValueError, IndexError, KeyError):
        pass
    for pid in session_members(broker.proc.pid):
        out.setdefault(pid, f"child{pid}")
    return out


def sample(broker: BrokerProcess) -> dict:
    """{role: {pid, rss, fds, sockets, connections}} for every broker process now."""
    try:
        conns = broker.api("connections")
    except (OSError, urllib.error.URLError, ValueError):
        conns = []
    per_frontend: dict = {}
    for c in conns:
        per_frontend[c.get("frontend")] = per_frontend.get(c.get("frontend"), 0) + 1
    out = {}
    who = roles(broker)
    split = any(r.startswith("frontend") for r in who.values())
    for pid, role in who.items():
        s = process_sample(pid)
        if s is None:
            continue
        s["pid"] = pid
        if split:       # the supervisor serves no AMQP when there are front-ends
            s["connections"] = per_frontend.get(int(role[8:]), 0) \
                if role.startswith("frontend") else 0
        else:
            s["connections"] = len(conns) if role == "supervisor" else 0
        out[role] = s
    return out


def row(t: float, snap: dict) -> str:
    cells = [f"{t:7.0f}"]
    for role in sorted(snap):
        s = snap[role]
        cells.append(f"{role}: {s['rss'] / MIB:6.1f} MiB {s['fds']:4d} fd "
                     f"{s['connections']:3d} conn")
    return " | ".join(cells)


# ----------------------------------------------------------------------------- verdict

def rss_slope(samples: list[tuple[float, dict]], role: str) -> float:
    """Least-squares slope of ``role``'s RSS over ``samples``, in MiB a minute (0 if fewer
    than two)."""
    points = [(t / 60, s[role]["rss"] / MIB) for t, s in samples if role in s]
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return 0.0
    return statistics.linear_regression(*zip(*points)).slope


def verdict(samples: list[tuple[float, dict]], warmup: float, quiet: dict,
            start_quiet: dict) -> tuple[bool, list[str]]:
    lines, flat = [], True
    kept = [(t, s) for t, s in samples if t >= warmup]
    if len(kept) < 3:
        return False, ["too few samples after the warm-up for a verdict"]
    third = max(1, len(kept) // 3)
    first, last = kept[:third], kept[-third:]
    for role in sorted(set().union(*(s.keys() for _, s in kept))):
        pids = {s[role]["pid"] for _, s in kept if role in s}
        if len(pids) > 1:
            flat = False
            lines.append(f"{role}: restarted during the run (pids {sorted(pids)})")
        for metric, rel, absolute, unit in (("rss", 0.15, 16 * MIB, MIB), ("fds", 0.25, 32, 1)):
            a = statistics.mean(s[role][metric] for _, s in first if role in s)
            b = statistics.mean(s[role][metric] for _, s in last if role in s)
            ok = b <= max(a * (1 + rel), a + absolute)
            flat &= ok
            shown = "MiB" if unit == MIB else ""
            slope = ""
            if metric == "rss":         # still rising at the end? (told, not judged)
                slope = f" (last third's slope {rss_slope(last, role):+.2f} MiB/min)"
            lines.append(f"{role} {metric}: first third {a / unit:.1f}{shown}, last third "
                         f"{b / unit:.1f}{shown}{slope}: {'flat' if ok else 'GREW'}")
    for role, s in quiet.items():
        if s["connections"]:
            flat = False
            lines.append(f"{role}: {s['connections']} connections still open after the "
                         f"clients left")
        before = start_quiet.get(role)
        if before is not None and s["fds"] > before["fds"] + 8:
            flat = False
            lines.append(f"{role}: {s['fds']} descriptors when quiet at the end, "
                         f"{before['fds']} at the start")
    return flat, lines


def wait_quiet(broker: BrokerProcess, timeout: float = 60.0) -> dict:
    """A sample once no AMQP connection is left (or after ``timeout``)."""
    end = time.monotonic() + timeout
    snap = sample(broker)
    while time.monotonic() < end and any(s["connections"] for s in snap.values()):
        time.sleep(1)
        snap = sample(broker)
    return snap


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between samples (default: the run / 20, 5 to 60)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds left out of the verdict (default: a tenth of the run)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--frontends", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--markdown", help="also append the table and verdict to this file")
    args = p.parse_args(argv)
    seconds = args.minutes * 60
    interval = args.interval or min(60.0, max(5.0, seconds / 20))
    warmup = args.warmup if args.warmup is not None else seconds / 10
    layout = []
    if args.workers is not None:
        layout += ["--workers", str(args.workers)]
    if args.frontends is not None:
        layout += ["--frontends", str(args.frontends)]
    with tempfile.TemporaryDirectory(prefix="soak-") as data:
        broker = BrokerProcess(data, "--heartbeat", "10", *layout, management=True).start()
        soak = None
        try:
            soak = Soak(broker, seconds, args.seed)
            soak.setup()
            start_quiet = wait_quiet(broker)          # the soak's queues open, no client
            threads = soak.start_actors()
            t0 = time.monotonic()
            samples, lines = [], []
            header = f"broker layout: {' '.join(layout) or 'default'}; {args.minutes:g} min"
            print(header, flush=True)
            for _ in range(int(seconds / interval) + 2):
                if soak.stop.wait(interval) or time.monotonic() >= soak.end:
                    break
                t = time.monotonic() - t0
                snap = sample(broker)
                samples.append((t, snap))
                lines.append(row(t, snap))
                print(lines[-1], flush=True)
            soak.stop.set()
            for t in threads:
                t.join(60)
            soak.proxy.stop()
            quiet = wait_quiet(broker)
            flat, why = verdict(samples, warmup, quiet, start_quiet)
            alive = broker.proc.poll() is None
            flat &= alive
            counts = ", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items()))
            report = [header, "", "```", *lines, "```", "", f"client side: {counts}", "",
                      "quiet at the end: " + row(0, quiet)[8:], "", *[f"- {w}" for w in why],
                      "", f"verdict: {'FLAT' if flat else 'NOT FLAT'}"
                      + ("" if alive else " (the broker died)")]
            print("\n".join(report[5 + len(lines):]), flush=True)
            if args.markdown:
                with open(args.markdown, "a") as f:
                    f.write("\n".join(report) + "\n\n")
            return 0 if flat else 1
        finally:
            if soak is not None:
                soak.stop.set()
                soak.proxy.stop()
            broker.stop()
            log = "".join(broker.output)
            if "Traceback" in log:
                print("broker log has tracebacks:\n" + log[-5000:], file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
