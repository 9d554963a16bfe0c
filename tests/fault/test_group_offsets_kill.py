"""SIGKILL a process while it writes group offsets (OffsetStore), then reopen.

The child commits a seeded, reproducible stream of (group, offset) updates and deletes, one
flush per round, with compaction set to run every few rounds, and prints each round number
once flushed. The parent kills it at a random point; a kill may land in the middle of a write
or of a compaction. On reopen the state must be exactly the state after some round at or after
the last one the child reported (SIGKILL keeps the page cache: everything flushed stays), and
no compaction leftover remains. Two more children kill themselves at the two steps of a
compaction (before the rename, after it before the directory fsync).
"""
from __future__ import annotations

import inspect
import os
import random
import signal
import subprocess
import sys

import pytest

from amqpbroker.groups.offset_store import FILE_NAME, OffsetStore

# no broker here: CI's split pass would repeat it unchanged (.ci/run)
pytestmark = pytest.mark.own_layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import os, random, signal, sys
from amqpbroker.groups.offset_store import OffsetStore
import amqpbroker.storage.fileformat as fileformat

directory, seed, rounds, die_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
UPDATES
store = OffsetStore(directory, fsync="never", compact_bytes=2048, compact_ratio=2)
if die_at == "before-rename":      # the .tmp is written and fsynced, the rename never happens
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
elif die_at == "after-rename":     # renamed, the directory never fsynced
    fileformat.fsync_dir = lambda d: os.kill(os.getpid(), signal.SIGKILL)
for r, batch in enumerate(updates(seed, rounds)):
    for group, offset in batch:
        if offset is None:
            store.delete(group)
        else:
            store.commit(group, offset)
    store.flush()
    print(r, flush=True)
"""


def updates(seed: int, rounds: int):
    """Per round, a few (group, offset or None for delete) updates; reproducible by seed."""
    rnd = random.Random(seed)
    for r in range(rounds):
        yield [(f"group-{rnd.randrange(60)}", None if rnd.random() < 0.1 else r * 10 + i)
               for i in range(rnd.randrange(1, 6))]


def states(seed: int, rounds: int) -> list[dict]:
    state: dict = {}
    out = []
    for batch in updates(seed, rounds):
        for group, offset in batch:
            if offset is None:
                state.pop(group, None)
            else:
                state[group] = offset
        out.append(dict(state))
    return out


def run_child(directory, seed, rounds, die_at="never"):
    code = CHILD.replace("UPDATES", "import random\n" + inspect.getsource(updates))
    return subprocess.Popen([sys.executable, "-c", code, str(directory), str(seed),
                             str(rounds), die_at], cwd=ROOT, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_while_writing_and_compacting(tmp_path, seed):
    rounds = 200_000
    expected = states(seed, 3000)
    child = run_child(tmp_path, seed, rounds)
    try:
        kill_after = random.Random(seed).randrange(50, 1500)
        last = -1
        for line in child.stdout:
            last = int(line)
            if last >= kill_after:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL and last >= kill_after
    with OffsetStore(tmp_path) as store:
        got = store.groups()
        assert got, "nothing survived"
        # the state after some round the child reached, never a mix or an older one
        candidates = [r for r in range(last, len(expected)) if expected[r] == got]
        assert candidates, f"state matches no round at or after {last}"
    assert os.listdir(tmp_path) == [FILE_NAME]


@pytest.mark.parametrize("die_at", ["before-rename", "after-rename"])
def test_killed_at_each_step_of_a_compaction(tmp_path, die_at):
    seed, rounds = 11, 5000
    child = run_child(tmp_path, seed, rounds, die_at)
    out, _ = child.communicate(timeout=120)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL      # it died in its first compaction
    reported = [int(x) for x in out.split()]
    last = reported[-1] if reported else -1
    if die_at == "before-rename":
        assert os.path.exists(tmp_path / (FILE_NAME + ".tmp"))
    expected = states(seed, rounds)
    with OffsetStore(tmp_path) as store:
        # the round being flushed when it died is written whole before compaction starts
        assert store.groups() == expected[last + 1]
    assert os.listdir(tmp_path) == [FILE_NAME]
