"""``amqpbroker ctl``: manage a running broker through its management HTTP API.

    amqpbroker ctl topics list
    amqpbroker ctl topics create orders --partitions 6 [--type classic]
    amqpbroker ctl topics add-partitions orders 12
    amqpbroker ctl topics delete orders
    amqpbroker ctl groups list [--format json]
    amqpbroker ctl groups show billing [--format json]
    amqpbroker ctl groups reset-offsets billing --topic orders \
        --to-earliest | --to-latest | --to-offset N | --to-datetime 2026-12-01T18:00:00Z

The connection flags have rabbitmqadmin's defaults (``http://localhost:15672``, user and
password ``guest``, vhost ``/``) and can be set in the environment as ``AMQPBROKER_CTL_URL``,
``_USER``, ``_PASSWORD``, ``_VHOST``. The groups commands print aligned tables, or with
``--format json`` the API's JSON, one document on stdout. Exit status, for scripts: 0 done;
1 the API refused (its status and reason are printed on stderr as ``Error: 404: ...``; a
group that does not exist is 404, a reset while the group has members is the API's refusal)
or could not be reached; 2 a bad command line, as argparse.
"""
from __future__ import annotations

import argparse
import base64
import datetime
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


# ------------------------------------------------------------------ consumer groups
def _table(headers: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell, two spaces apart (kafka-consumer-groups' look)."""
    cells = [headers] + [[str(v) if v not in (None, "") else "-" for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def _dump(doc) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def groups_list(api: Api, args) -> None:
    _, groups = api.call("GET", f"/api/consumer-groups/{_q(args.vhost)}")
    groups = sorted(groups, key=lambda g: g["name"])
    if args.format == "json":
        return _dump(groups)
    print(_table(["GROUP", "TOPICS", "STATE", "MEMBERS", "LAG"],
                 [[g["name"], ",".join(g["topics"]) or None, g["state"], len(g["members"]),
                   g["lag"]] for g in groups]))


def _group(api: Api, vhost: str, name: str) -> dict:
    return api.call("GET", f"/api/consumer-groups/{_q(vhost)}/{_q(name)}")[1]


def groups_show(api: Api, args) -> None:
    g = _group(api, args.vhost, args.name)
    if args.format == "json":
        return _dump(g)
    print(f"group {g['name']!r} in vhost {g['vhost']!r}: {g['state']}, "
          f"{len(g['members'])} member{'' if len(g['members']) == 1 else 's'}, lag {g['lag']}")
    print()
    print(_table(["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER"],
                 [[p["topic"], p["partition"], p["committed_offset"], p["log_end_offset"],
                   p["lag"], p["member"]]
                  for p in sorted(g["partitions"], key=lambda p: (p["topic"], p["partition"]))]))
    if g["members"]:
        print()
        print(_table(["MEMBER", "INSTANCE", "CONNECTION", "ASSIGNMENT"],
                     [[m["member_id"], m["instance_id"], m["connection"],
                       ",".join(f"{a['topic']}-{a['partition']}" for a in
                                sorted(m["assignment"],
                                       key=lambda a: (a["topic"], a["partition"])))
                       or None] for m in g["members"]]))


def _datetime_ms(text: str) -> int:
    """ISO 8601 to milliseconds since the epoch; no zone given means UTC."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1000)


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not an offset (an integer >= 0): {text!r}")
    return value


def groups_reset_offsets(api: Api, args) -> None:
    if args.to_earliest:
        to = "earliest"
    elif args.to_latest:
        to = "latest"
    elif args.to_offset is not None:
        to = {"offset": args.to_offset}
    else:
        to = {"timestamp": args.to_datetime}
    api.call("POST", f"/api/consumer-groups/{_q(args.vhost)}/{_q(args.name)}/reset-offsets",
             {"topic": args.topic, "to": to})
    g = _group(api, args.vhost, args.name)
    g["partitions"] = [p for p in g["partitions"] if p["topic"] == args.topic]
    if args.format == "json":
        return _dump(g)
    print(_table(["TOPIC", "PARTITION", "NEW-OFFSET", "LOG-END-OFFSET", "LAG"],
                 [[p["topic"], p["partition"], p["committed_offset"], p["log_end_offset"],
                   p["lag"]] for p in sorted(g["partitions"], key=lambda p: p["partition"])]))


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

    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=("table", "json"), default="table",
                     help="aligned table (default) or the API's JSON")
    cg = groups.add_parser("groups", help="consumer groups").add_subparsers(
        dest="command", required=True)
    cg.add_parser("list", help="the vhost's consumer groups, with their lag",
                  parents=flags + [fmt]).set_defaults(run=groups_list)
    show = cg.add_parser("show", help="a group's partitions (offsets, lag) and members",
                         parents=flags + [fmt])
    show.add_argument("name")
    show.set_defaults(run=groups_show)
    reset = cg.add_parser("reset-offsets", parents=flags + [fmt],
                          help="move a group's committed offsets on a topic (the group must "
                               "have no members)")
    reset.add_argument("name")
    reset.add_argument("--topic", required=True, help="the topic (or stream) to reset")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the start of each log")
    to.add_argument("--to-latest", action="store_true", help="the end of each log")
    to.add_argument("--to-offset", type=_offset, metavar="N",
                    help="offset N on every partition (clamped to each log)")
    to.add_argument("--to-datetime", type=_datetime_ms, metavar="ISO",
                    help="the first message at or after this time, e.g. "
                         "2026-12-01T18:00:00Z (no zone: UTC)")
    reset.set_defaults(run=groups_reset_offsets)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(Api(args.url, args.user, args.password), args)
    except Refused as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0
