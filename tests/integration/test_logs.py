"""``--log-format json``: every line a JSON object with ts, level, logger, msg, pid and role,
and each event an operator looks for logged exactly once, with its context, by the process
that owns it, in both process layouts: connection accept / open / close (RabbitMQ's words),
a login failure, an alarm, a queue that cannot be recovered, a child process restart."""
from __future__ import annotations

import json
import os
import signal
import time

import pika
import pytest
from pika.exceptions import ProbableAuthenticationError

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.leaks import wait_until as wait_for

# every broker here names its layout: CI's split pass would repeat it (.ci/run)
pytestmark = pytest.mark.own_layout

FIELDS = {"ts", "level", "logger", "msg", "pid", "role"}


def records(b: BrokerProcess) -> list[dict]:
    """Every log line so far, parsed; only the readiness line on stdout is not JSON."""
    out = []
    for line in list(b.output):
        if line.startswith("amqpbroker ready "):
            continue
        rec = json.loads(line)
        assert FIELDS <= rec.keys(), rec
        assert rec["level"] in ("debug", "info", "warning", "error", "critical")
        assert time.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(rec)
    return out


def matching(b, text: str) -> list[dict]:
    return [r for r in records(b) if text in r["msg"]]


def roles(b: BrokerProcess) -> dict[int, str]:
    """pid -> role: the supervisor, and each front-end by the pid it was started with."""
    out = {b.proc.pid: "supervisor"}
    out.update({pid: f"frontend{i}" for i, pid in enumerate(b.frontend_pids)})
    out.update({pid: f"worker{i}" for i, pid in enumerate(b.worker_pids)})
    return out


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request):
    return LAYOUTS[request.param]


def test_connection_open_close_and_login_failure_once_each_with_context(tmp_path, layout):
    with BrokerProcess(tmp_path, "--log-format", "json", *layout) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        local = conn._impl._transport._sock.getsockname()
        name = f"{local[0]}:{local[1]} -> 127.0.0.1:{b.port}"
        conn.close()
        with pytest.raises(ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(
                f"amqp://guest:wrong@127.0.0.1:{b.port}/"))
        closed = wait_for(lambda: matching(b, f"closing AMQP connection {name}"),
                          what="the close line")
        refused = wait_for(lambda: matching(b, "login refused"), what="the refusal")
        pids = roles(b)

        [accepted] = matching(b, f"accepting AMQP connection {name}")
        [opened] = matching(b, f"connection {name}: user 'guest' authenticated and granted "
                               f"access to vhost '/'")
        assert len(closed) == 1
        for rec in (accepted, opened, closed[0]):
            assert rec["logger"] == "amqpbroker.connection" and rec["level"] == "info"
            assert rec["connection"] == name
            assert pids[rec["pid"]] == rec["role"]
            assert rec["role"] == ("supervisor" if not b.frontend_pids else
                                   accepted["role"])
        assert "user" not in accepted                   # not logged in yet
        assert (opened["user"], opened["vhost"]) == ("guest", "/")
        assert closed[0]["msg"] == f"closing AMQP connection {name} (vhost: '/', user: 'guest')"
        assert (closed[0]["user"], closed[0]["vhost"]) == ("guest", "/")

        assert len(refused) == 1
        assert refused[0]["level"] == "warning"
        assert refused[0]["msg"].endswith("(state: starting): PLAIN login refused: user "
                                          "'guest' - invalid credentials")
        assert refused[0]["msg"].startswith("Error on AMQP connection ")
        assert refused[0]["user"] == "guest"
        assert refused[0]["connection"] in refused[0]["msg"]
        # one accept and one close for each connection, whichever front-end took it
        assert len(matching(b, "accepting AMQP connection")) == 2
        wait_for(lambda: len(matching(b, "closing AMQP connection")) == 2,
                 what="the refused connection's close line")


def test_an_alarm_is_logged_once_by_the_supervisor(tmp_path, layout):
    with BrokerProcess(tmp_path, "--log-format", "json", "--memory-high-watermark",
                       "0.000001", *layout) as b:
        # a connection opened after the alarm is blocked: every front-end knows of it
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        conn.close()
        wait_for(lambda: matching(b, "closing AMQP connection"), what="the connection")
        alarms = [r for r in records(b) if r["logger"] == "amqpbroker.alarms"]
        assert len(alarms) == 1, alarms
        assert alarms[0]["msg"].startswith("memory alarm set: memory use above ")
        assert (alarms[0]["level"], alarms[0]["alarm"], alarms[0]["role"],
                alarms[0]["pid"]) == ("warning", "memory", "supervisor", b.proc.pid)


def test_a_queue_that_cannot_be_recovered_is_logged_once(tmp_path, layout):
    data = tmp_path / "data"
    with BrokerProcess(data, *layout) as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        ch = conn.channel()
        ch.queue_declare("log-broken", durable=True)
        ch.basic_publish("", "log-broken", b"kept", pika.BasicProperties(delivery_mode=2))
        conn.close()
    [directory] = [d for d in (data / "queues").iterdir()
                   if b"kept" in (d / "00000000000000000000.log").read_bytes()]
    acks = directory / "acks.log"
    if acks.exists():                       # made by the first ack (none here)
        acks.rename(acks.with_suffix(".aside"))
    acks.mkdir()                            # EISDIR when the worker opens it
    with BrokerProcess(data, "--log-format", "json", *layout) as b:
        down = matching(b, "queue 'log-broken' in vhost '/' is down")
        assert len(down) == 1, down
        assert (down[0]["level"], down[0]["queue"], down[0]["vhost"], down[0]["role"]) == \
            ("error", "log-broken", "/", "supervisor")
        assert "Is a directory" in down[0]["msg"]
        assert [r for r in records(b) if "log-broken" in r["msg"]] == down


@pytest.mark.parametrize("kind", ["worker", "frontend"])
def test_a_child_restart_is_logged_once(tmp_path, kind):
    with BrokerProcess(tmp_path, "--log-format", "json",
                       *LAYOUTS["2 workers + 2 front-ends"]) as b:
        pid = (b.worker_pids if kind == "worker" else b.frontend_pids)[0]
        name = "worker 0" if kind == "worker" else "front-end 0"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(matching(b, f"{name} started (pid ")) == 2, what="the restart")
        exits = [r for r in records(b) if r["level"] == "error"]
        assert len(exits) == 1, exits
        assert exits[0]["msg"] == (f"{name} (pid {pid}) exited with -9"
                                   + (" (its connections are lost)" if kind == "frontend"
                                      else "") + "; restarting it")
        assert (exits[0]["child"], exits[0]["role"], exits[0]["pid"]) == \
            (name, "supervisor", b.proc.pid)


def test_text_format_is_unchanged_for_people(tmp_path):
    with BrokerProcess(tmp_path, "--workers", "0", "--frontends", "0") as b:
        conn = pika.BlockingConnection(pika.URLParameters(b.url))
        conn.close()
        line = wait_for(lambda: [line for line in b.output
                                 if "closing AMQP connection" in line], what="the close")[0]
    # "2026-12-01 18:24:55,542 INFO amqpbroker.connection: closing AMQP connection ..."
    date, clock, level, logger, rest = line.split(" ", 4)
    assert (level, logger) == ("INFO", "amqpbroker.connection:")
    assert rest.startswith("closing AMQP connection 127.0.0.1:")
    with pytest.raises(ValueError):
        json.loads(line)
