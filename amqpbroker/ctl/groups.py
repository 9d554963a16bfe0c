"""``ctl groups``: consumer groups (ours, ``/api/consumer-groups``), shown the way
``kafka-consumer-groups --describe`` shows them.

    amqpbroker ctl groups list                                  GROUP TOPICS STATE MEMBERS LAG
    amqpbroker ctl groups show billing                          per partition: offsets, lag
    amqpbroker ctl groups reset-offsets billing --topic orders --to-earliest | --to-latest |
        --to-offset N | --to-datetime 2026-12-01T18:00:00Z      (no zone: UTC)

``--format json`` prints the API's objects. A reset is refused (exit 1) while the group has
members on the topic, as Kafka refuses it for an active group.
"""
from __future__ import annotations

import argparse
import datetime
import json

from .api import q


def _table(headers: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell, two spaces apart (kafka-consumer-groups' look);
    an empty cell is ``-``."""
    cells = [headers] + [[str(v) if v not in (None, "") else "-" for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def _dump(doc) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def _group(api, vhost: str, name: str) -> dict:
    return api.call("GET", f"/api/consumer-groups/{q(vhost)}/{q(name)}",
                    what=f"consumer group '{name}' in vhost '{vhost}'")


def list_groups(api, args) -> None:
    groups = api.call("GET", f"/api/consumer-groups/{q(args.vhost)}",
                      what=f"vhost '{args.vhost}'")
    groups = sorted(groups, key=lambda g: g["name"])
    if args.format == "json":
        return _dump(groups)
    print(_table(["GROUP", "TOPICS", "STATE", "MEMBERS", "LAG"],
                 [[g["name"], ",".join(g["topics"]) or None, g["state"], len(g["members"]),
                   g["lag"]] for g in groups]))


def show(api, args) -> None:
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


def reset_offsets(api, args) -> None:
    if args.to_earliest:
        to = "earliest"
    elif args.to_latest:
        to = "latest"
    elif args.to_offset is not None:
        to = {"offset": args.to_offset}
    else:
        to = {"timestamp": args.to_datetime}
    api.call("POST", f"/api/consumer-groups/{q(args.vhost)}/{q(args.name)}/reset-offsets",
             {"topic": args.topic, "to": to})
    g = _group(api, args.vhost, args.name)
    g["partitions"] = [p for p in g["partitions"] if p["topic"] == args.topic]
    if args.format == "json":
        return _dump(g)
    print(_table(["TOPIC", "PARTITION", "NEW-OFFSET", "LOG-END-OFFSET", "LAG"],
                 [[p["topic"], p["partition"], p["committed_offset"], p["log_end_offset"],
                   p["lag"]] for p in sorted(g["partitions"], key=lambda p: p["partition"])]))


def register(commands, flags) -> None:
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=("table", "json"), default="table",
                     help="aligned table (default) or the API's JSON")
    cg = commands.add_parser("groups", help="consumer groups").add_subparsers(
        dest="command", required=True)
    cg.add_parser("list", help="the vhost's consumer groups, with their lag",
                  parents=flags + [fmt]).set_defaults(run=list_groups)
    one = cg.add_parser("show", help="a group's partitions (offsets, lag) and members",
                        parents=flags + [fmt])
    one.add_argument("name")
    one.set_defaults(run=show)
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
    reset.set_defaults(run=reset_offsets)
