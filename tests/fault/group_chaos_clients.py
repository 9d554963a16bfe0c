"""The client processes of test_consumer_group_chaos.py: unchanged pika code, one process each.

    python group_chaos_clients.py producer DIR NAME TOPIC KEYS SEED
    python group_chaos_clients.py member   DIR NAME TOPIC GROUP PREFETCH

DIR/url holds the broker's current AMQP URL (the test replaces it when it restarts the broker
on new ports); a client that loses its connection reads it again and reconnects.

A producer publishes keyed messages with publisher confirms, one at a time, the body JSON
{"pr": NAME, "k": key, "s": per-key sequence}; after each confirm it appends "key seq" to
DIR/confirmed-NAME. Publishes are idempotent (headers x-producer-id NAME and x-sequence, the
producer's count of confirmed messages): a publish that fails (connection lost, nack) is sent
again, same key, sequence and x-sequence, and a message stored whose confirm was lost is a
duplicate the broker confirms without storing it again.
SIGTERM: finish the publish in hand and exit.

A member consumes the topic as a member of GROUP (manual acks, basic.qos PREFETCH, from
`first` where the group has committed nothing) and appends
one JSON line per event to DIR/member-NAME, flushed before it acts:
    {"ev": "join", "t", "session"}              before basic.consume (a new session each time)
    {"ev": "msg", "t", "session", "p", "o", "pr", "k", "s", "rd"}   a delivery, before its ack
    {"ev": "end", "t", "session", "how"}        how: cancel | close (asked for), server-cancel,
                                                disconnected (noticed), restarting (a
                                                consume refused while a worker restarts: the
                                                member tries again), refused (any other
                                                channel error: the member exits 1)
"t" is time.monotonic(), one clock for every process of the machine. SIGUSR1: leave with
basic.cancel, then exit; SIGTERM: leave by closing the connection, then exit. A consumer the
broker cancels (basic.cancel from the server) or a lost connection: the member joins again.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import pika
import pika.exceptions

CONNECT_TIMEOUT = 60.0          # a restarted broker is back well within this


def connect(directory: str) -> pika.BlockingConnection:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        with open(os.path.join(directory, "url")) as f:
            url = f.read().strip()
        try:
            return pika.BlockingConnection(pika.URLParameters(url))
        except (pika.exceptions.AMQPConnectionError, ValueError):
            # ValueError: pika's connector when the peer resets a connection it just
            # accepted ("Expected connected socket, but getpeername() failed"), as a
            # listener torn down by a crash does to the connections in its backlog.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)        # the broker is restarting: try again


class Log:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())      # one write: the test reads whole lines


def producer(directory: str, name: str, topic: str, keys: int, seed: int) -> None:
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    rng = random.Random(seed)
    key_names = [f"{name}-k{j}" for j in range(keys)]
    next_seq = {k: 0 for k in key_names}
    sequence = 0                    # the producer's x-sequence: idempotent publishes
    log = Log(os.path.join(directory, f"confirmed-{name}"))
    key = rng.choice(key_names)
    while not stop:
        try:
            conn = connect(directory)
            ch = conn.channel()
            ch.confirm_delivery()
            while not stop:
                body = json.dumps({"pr": name, "k": key, "s": next_seq[key]}).encode()
                props = pika.BasicProperties(delivery_mode=2, headers={
                    "x-producer-id": name, "x-sequence": sequence})
                ch.basic_publish(topic, key, body, props, mandatory=True)
                log.write(f"{key} {next_seq[key]}")
                next_seq[key] += 1
                sequence += 1
                key = rng.choice(key_names)
            conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass                    # unconfirmed: the same key and sequence again


def member(directory: str, name: str, topic: str, group: str, prefetch: int) -> None:
    want: list[str] = []
    signal.signal(signal.SIGUSR1, lambda *a: want.append("cancel"))
    signal.signal(signal.SIGTERM, lambda *a: want.append("close"))
    log = Log(os.path.join(directory, f"member-{name}"))
    session = 0
    while not want:
        session += 1
        state = {"leaving": False, "cancelled": False}
        try:
            conn = connect(directory)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch)
            ch.add_on_cancel_callback(lambda frame: state.update(cancelled=True))

            def on_message(ch, method, props, body, session=session, state=state):
                if state["leaving"]:
                    return          # after "end": neither processed nor acked
                h = props.headers or {}
                m = json.loads(body)
                log.write(json.dumps({"ev": "msg", "t": time.monotonic(), "session": session,
                                      "p": h.get("x-partition"), "o": h.get("x-stream-offset"),
                                      "pr": m["pr"], "k": m["k"], "s": m["s"],
                                      "rd": method.redelivered}))
                ch.basic_ack(method.delivery_tag)

            log.write(json.dumps({"ev": "join", "t": time.monotonic(), "session": session}))
            # from `first` where the group has no commit yet: the producers may start
            # before the group's first assignment, and nothing confirmed may be skipped
            tag = ch.basic_consume(topic, on_message, arguments={
                "x-consumer-group": group, "x-stream-offset": "first"})
            while not want and not state["cancelled"]:
                conn.process_data_events(time_limit=0.05)
            state["leaving"] = True
            how = "server-cancel" if state["cancelled"] and not want else want[0]
            log.write(json.dumps({"ev": "end", "t": time.monotonic(), "session": session,
                                  "how": how}))
            if how == "cancel":
                ch.basic_cancel(tag)
            conn.close()
        except pika.exceptions.ChannelClosedByBroker as err:
            restarting = err.reply_code == 404 and "being restarted" in err.reply_text
            log.write(json.dumps({"ev": "end", "t": time.monotonic(), "session": session,
                                  "how": "restarting" if restarting else "refused",
                                  "error": repr(err)}))
            if not restarting:
                sys.exit(f"the broker closed the channel: {err!r}")
            conn.close()
            time.sleep(0.05)        # a worker is restarting: try again, as a client would
        except (pika.exceptions.AMQPError, OSError) as err:
            if not state["leaving"]:
                state["leaving"] = True
                log.write(json.dumps({"ev": "end", "t": time.monotonic(), "session": session,
                                      "how": "disconnected", "error": repr(err)}))


if __name__ == "__main__":
    role, directory, name, topic = sys.argv[1:5]
    if role == "producer":
        producer(directory, name, topic, int(sys.argv[5]), int(sys.argv[6]))
    else:
        member(directory, name, topic, sys.argv[5], int(sys.argv[6]))
