"""``amqpbroker ctl``: manage a running broker through its management HTTP API.

    amqpbroker ctl topics list
    amqpbroker ctl topics create orders --partitions 6 [--type classic]
    amqpbroker ctl topics add-partitions orders 12
    amqpbroker ctl topics delete orders
    amqpbroker ctl cluster

The connection flags have rabbitmqadmin's defaults (``http://localhost:15672``, user and
password ``guest``, vhost ``/``) and can be set in the environment as ``AMQPBROKER_CTL_URL``,
``_USER``, ``_PASSWORD``, ``_VHOST``. A refusal is printed as the API gave it, on stderr,
with exit status 1 (2 for a bad command line, as argparse).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULTS = {"url": "http://localhost:15672", "user": "guest", "password": "guest",
            "vhost": "/"}


class Refused(Exception):
    """The API said no (4xx/5xx), or could not be reached."""


class Api:
    def __init__(self, url: str, user: str, password: str):
        self.base = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                reason = json.loads(raw).get("reason", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                reason = raw.decode(errors="replace")
            raise Refused(f"{err.code}: {reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise Refused(f"cannot reach {self.base}: {getattr(err, 'reason', err)}") from None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# ------------------------------------------------------------------ topics
def topics_list(api: Api, args) -> None:
    _, topics = api.call("GET", f"/api/topics/{_q(args.vhost)}")
    print("name\tpartitions\ttype")
    for t in sorted(topics, key=lambda t: t["name"]):
        print(f"{t['name']}\t{t['partitions']}\t{t['partition_type']}")


def topics_create(api: Api, args) -> None:
    body = {"partitions": args.partitions}
    if args.type:
        body["type"] = args.type
    path = f"/api/topics/{_q(args.vhost)}/{_q(args.name)}"
    status, _ = api.call("PUT", path, body)
    if status != 201:
        # PUT also adds partitions to an existing topic: say what happened
        _, topic = api.call("GET", path)
        print(f"topic '{args.name}' exists, with {topic['partitions']} partitions")
        return
    print(f"topic '{args.name}' created with {args.partitions} partitions")


def topics_add_partitions(api: Api, args) -> None:
    path = f"/api/topics/{_q(args.vhost)}/{_q(args.name)}"
    api.call("GET", path)                   # 404 for a topic that is not there
    api.call("PUT", path, {"partitions": args.partitions})
    print(f"topic '{args.name}' has {args.partitions} partitions")


def topics_delete(api: Api, args) -> None:
    api.call("DELETE", f"/api/topics/{_q(args.vhost)}/{_q(args.name)}")
    print(f"topic '{args.name}' deleted, with its partitions")


# ------------------------------------------------------------------ cluster
def cluster(api: Api, args) -> None:
    """The nodes, as the node asked sees the cluster (docs/CLUSTER.md)."""
    _, nodes = api.call("GET", "/api/nodes")
    print("node\tstate\tcontroller\tamqp\tmanagement")
    for n in nodes:
        state = n.get("state") or ("running" if n.get("running") else "down")
        print(f"{n.get('node_name', n['name'])}\t{state}\t"
              f"{'yes' if n.get('controller') else 'no'}\t"
              f"{n.get('host', 'localhost')}:{n.get('amqp_port', '')}\t"
              f"{n.get('host', 'localhost')}:{n.get('management_port', '')}")


def _connection_flags(leaf: bool) -> argparse.ArgumentParser:
    """The connection flags, taken before the command or after it (on a command, absent
    flags leave what was given before it)."""
    p = argparse.ArgumentParser(add_help=False)
    for name, default in DEFAULTS.items():
        env = "AMQPBROKER_CTL_" + name.upper()
        p.add_argument("--" + name,
                       default=argparse.SUPPRESS if leaf else os.environ.get(env, default),
                       help=f"management API {name} (default {default}) [env {env}]")
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amqpbroker ctl", description=__doc__.split("\n\n")[0],
                                parents=[_connection_flags(False)])
    flags = [_connection_flags(True)]
    groups = p.add_subparsers(dest="group", required=True)
    groups.add_parser("cluster", help="the cluster's nodes",
                      parents=flags).set_defaults(run=cluster)
    topics = groups.add_parser("topics", help="partitioned topics").add_subparsers(
        dest="command", required=True)
    topics.add_parser("list", help="the vhost's topics",
                      parents=flags).set_defaults(run=topics_list)
    create = topics.add_parser("create", help="create a topic", parents=flags)
    create.add_argument("name")
    create.add_argument("--partitions", type=int, required=True)
    create.add_argument("--type", choices=("stream", "classic", "quorum"),
                        help="the partitions' queue type (default stream)")
    create.set_defaults(run=topics_create)
    grow = topics.add_parser("add-partitions", parents=flags,
                             help="raise a topic's partition count to N (keys move)")
    grow.add_argument("name")
    grow.add_argument("partitions", type=int, metavar="N")
    grow.set_defaults(run=topics_add_partitions)
    delete = topics.add_parser("delete", help="delete a topic and its partitions",
                               parents=flags)
    delete.add_argument("name")
    delete.set_defaults(run=topics_delete)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(Api(args.url, args.user, args.password), args)
    except Refused as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0
