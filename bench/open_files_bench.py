"""Many idle durable queues under a low open-files limit: what the file handle cache costs.

Part 1, the broker: start it under ``prlimit --nofile=LIMIT:LIMIT`` (default 1,024, so the
storage files get 512 descriptors), declare N durable queues (default 100,000; by definitions
imports of 5,000 queues each, since declaring them one by one over AMQP rewrites
definitions.json each time), publish one persistent message to each (publisher confirms, a
window of 2,000), restart under the same limit (every queue is recovered), then touch every
queue in random order: basic.get its message, check the body, ack. Reported per phase:
queues/s, the broker's descriptors (all, and those on files in the data directory) and RSS
(sampled every 0.5 s, peak per phase).

Part 2, the cache alone (in this process, no broker): M partition logs (default 4,000) and
their ack logs, touched in random order (a read of the log and an ack-log append, fsync
"never" so the disks' fsyncs do not hide the cost), with a cache holding every file and with
one of 512 files; the difference per touch is the cost of closing and reopening files, and
the cache's own count gives the time of one open (closing the file it replaces included).
Each log is touched once before the clock starts (its files opened), then 10 times.

    python bench/open_files_bench.py [--queues 100000] [--nofile 1024] [--logs 4000]
                                     [--data-dir DIR] [--skip-broker] [-- extra broker flags]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import aiormq  # noqa: E402
from pamqp import commands as spec  # noqa: E402

from amqpbroker import child  # noqa: E402
from amqpbroker.storage import AckLog, PartitionLog, Record  # noqa: E402
from amqpbroker.storage.filecache import FileCache  # noqa: E402
from amqpbroker.testing import BrokerProcess  # noqa: E402

MIB = 1024 * 1024
IMPORT_CHUNK = 5000
WINDOW = 2000
GET_CHANNELS = 16
TOUCHES_PER_LOG = 10


# ------------------------------------------------------------------------------- sampling
def vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def descriptors(pid: int, data_dir: str) -> tuple[int, int]:
    """(all descriptors, descriptors on files under data_dir) of process pid."""
    total = files = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        total += 1
        files += target.startswith(data_dir)
    return total, files


class Sampler(threading.Thread):
    """Peak (descriptors, data-dir descriptors, RSS) per phase over the broker's processes."""

    def __init__(self, broker: BrokerProcess):
        super().__init__(daemon=True)
        self.broker = broker
        self.phase = "start"
        self.peak: dict[str, list[int]] = {}
        self.stop = threading.Event()

    def pids(self) -> list[int]:
        b = self.broker
        return [b.proc.pid, *b.worker_pids, *b.frontend_pids]

    def sample(self) -> None:
        peak = self.peak.setdefault(self.phase, [0, 0, 0])
        for pid in self.pids():
            try:
                fds, files = descriptors(pid, self.broker.data_dir)
                rss = vmrss(pid)
            except OSError:
                continue
            peak[0], peak[1], peak[2] = max(peak[0], fds), max(peak[1], files), max(peak[2], rss)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.5)


# ------------------------------------------------------------------------------- the broker
def names(n: int) -> list[str]:
    return [f"idle-{i:06d}" for i in range(n)]


def import_queues(b: BrokerProcess, queues: list[str]) -> None:
    body = {"rabbit_version": "3.12.0", "users": [], "vhosts": [], "permissions": [],
            "exchanges": [], "bindings": [],
            "queues": [{"name": q, "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {}} for q in queues]}
    req = urllib.request.Request(f"http://{b.host}:{b.management_port}/api/definitions",
                                 data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=3600) as resp:
        assert resp.status == 204, resp.status


async def publish_one_each(url: str, queues: list[str]) -> None:
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        window = asyncio.Semaphore(WINDOW)
        props = spec.Basic.Properties(delivery_mode=2)

        async def one(q: str) -> None:
            async with window:
                confirm = await ch.basic_publish(f"body of {q}".encode(), routing_key=q,
                                                 properties=props)
                assert isinstance(confirm, spec.Basic.Ack), confirm
        await asyncio.gather(*(one(q) for q in queues))
    finally:
        await conn.close()


async def get_each(url: str, queues: list[str]) -> None:
    """basic.get + ack of every queue's message, GET_CHANNELS channels at a time."""
    conn = await aiormq.connect(url)
    try:
        async def worker(part: list[str]) -> None:
            ch = await conn.channel()
            for q in part:
                msg = await ch.basic_get(q, no_ack=False)
                assert msg.body == f"body of {q}".encode(), (q, msg.body)
                await ch.basic_ack(msg.delivery_tag)
        await asyncio.gather(*(worker(queues[i::GET_CHANNELS]) for i in range(GET_CHANNELS)))
    finally:
        await conn.close()


def broker_part(n: int, nofile: int, data_dir: str, extra: list[str]) -> dict:
    out: dict = {"queues": n, "nofile": nofile}
    command = child.command("amqpbroker")
    if nofile:
        command = ["prlimit", f"--nofile={nofile}:{nofile}", *command]
    b = BrokerProcess(data_dir, *extra, management=True, command=command,
                      startup_timeout=3600)
    queues = names(n)
    b.start()
    sampler = Sampler(b)
    sampler.start()
    try:
        sampler.phase = "declare"
        t = time.monotonic()
        for i in range(0, n, IMPORT_CHUNK):
            import_queues(b, queues[i:i + IMPORT_CHUNK])
        out["declare_s"] = time.monotonic() - t
        sampler.phase = "publish"
        t = time.monotonic()
        asyncio.run(publish_one_each(b.url, queues))
        out["publish_s"] = time.monotonic() - t
        sampler.sample()
        sampler.phase = "idle"
        sampler.sample()
    finally:
        sampler.stop.set()
        sampler.join()
        b.stop(timeout=3600)
    first_run = sampler.peak
    t = time.monotonic()
    b.start()
    out["restart_s"] = time.monotonic() - t
    sampler = Sampler(b)
    sampler.phase = "recovered"
    sampler.sample()
    sampler.start()
    try:
        sampler.phase = "touch"
        order = list(queues)
        random.Random(1).shuffle(order)
        t = time.monotonic()
        asyncio.run(get_each(b.url, order))
        out["touch_s"] = time.monotonic() - t
    finally:
        sampler.stop.set()
        sampler.join()
        b.stop(timeout=3600)
    out["peak"] = {**first_run, **sampler.peak}
    out["errors"] = [line for line in b.output if "Too many open files" in line
                     or "Traceback" in line]
    return out


# ------------------------------------------------------------------------------- the cache
def rec(i: int) -> Record:
    return Record(1_700_000_000_000 + i, "", "rk", b"\x00\x00", b"x" * 100, 1)


def cache_part(m: int, directory: str) -> dict:
    """Touches of m logs + ack logs in random order (after one touch of each), with every
    file cached and with 512."""
    out = {"logs": m}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * m + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    for limit in (4 * m, 512):
        if limit > resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 128:
            out[f"limit_{limit}"] = "skipped: RLIMIT_NOFILE too low"
            continue
        root = tempfile.mkdtemp(dir=directory)
        cache = FileCache(limit=limit)
        logs = [PartitionLog(os.path.join(root, f"q{i}"), fsync="never", files=cache)
                for i in range(m)]
        acks = [AckLog(os.path.join(root, f"q{i}", "acks.log"), fsync="never", files=cache)
                for i in range(m)]
        for i, log in enumerate(logs):        # warm-up: every file opened once
            log.append([rec(0)])
            assert log.read(0, max_records=1)[0][0] == 0
            acks[i].record([1])
        rng = random.Random(2)
        order = [rng.randrange(m) for _ in range(TOUCHES_PER_LOG * m)]
        before = cache.stats()
        t = time.perf_counter()
        for k, i in enumerate(order, 2):
            assert logs[i].read(0, max_records=1)[0][0] == 0
            acks[i].record([k])
        elapsed = time.perf_counter() - t
        after = cache.stats()
        opens = after["opens"] - before["opens"]
        out[f"limit_{limit}"] = {
            "touch_us": elapsed / len(order) * 1e6,
            "reopens_per_touch": opens / len(order),
            "open_us": (after["open_ns"] - before["open_ns"]) / max(opens, 1) / 1000,
            "evictions_synced": after["evictions_synced"], "open_at_end": after["open"]}
        for log, a in zip(logs, acks):
            a.close()
            log.close()
        shutil.rmtree(root)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queues", type=int, default=100_000)
    p.add_argument("--nofile", type=int, default=1024,
                   help="RLIMIT_NOFILE of the broker (0: as inherited, lifted to the hard limit)")
    p.add_argument("--logs", type=int, default=4000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--skip-broker", action="store_true")
    p.add_argument("extra", nargs="*", help="extra broker flags (after --)")
    a = p.parse_args()
    base = a.data_dir or tempfile.mkdtemp(prefix="open-files-bench-")
    os.makedirs(base, exist_ok=True)
    try:
        results = {}
        if not a.skip_broker:
            results["broker"] = broker_part(a.queues, a.nofile, os.path.join(base, "broker"),
                                            a.extra)
            r = results["broker"]
            n = r["queues"]
            print(f"broker: {n} durable queues under RLIMIT_NOFILE {r['nofile'] or 'unchanged'}")
            for phase in ("declare", "publish", "restart", "touch"):
                print(f"  {phase:8s} {r[phase + '_s']:8.1f} s  {n / r[phase + '_s']:8.0f} queues/s")
            for phase, (fds, files, rss) in r["peak"].items():
                print(f"  peak while {phase:9s}: {fds:5d} descriptors, {files:4d} on queue "
                      f"files, RSS {rss / MIB:7.1f} MiB")
            print(f"  errors in the log: {len(r['errors'])}")
        results["cache"] = cache_part(a.logs, base)
        c = results["cache"]
        print(f"cache alone: {c['logs']} logs + ack logs, {TOUCHES_PER_LOG} touches each in "
              f"random order")
        for key, v in c.items():
            if key.startswith("limit_"):
                print(f"  {key}: {v}")
        print(json.dumps(results, indent=1, default=str))
    finally:
        if not a.data_dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
