"""``ctl topics``: partitioned topics (ours, ``/api/topics``)."""
from __future__ import annotations

from .api import vhost, add_output_flags, emit, q, say

COLUMNS = ("name", "partitions", "partition_type")


def list_topics(api, args) -> None:
    topics = api.call("GET", f"/api/topics/{q(args.vhost)}", what=vhost(args))
    emit(sorted(topics, key=lambda t: t["name"]), args)


def create(api, args) -> None:
    body = {"partitions": args.partitions}
    if args.type:
        body["type"] = args.type
    path = f"/api/topics/{q(args.vhost)}/{q(args.name)}"
    if _exists(api, path):
        # PUT also grows an existing topic: create never does that behind a user's back
        topic = api.call("GET", path)
        say(f"topic '{args.name}' exists, with {topic['partitions']} partitions")
        return
    api.call("PUT", path, body)
    say(f"topic '{args.name}' created with {args.partitions} partitions")


def add_partitions(api, args) -> None:
    path = f"/api/topics/{q(args.vhost)}/{q(args.name)}"
    api.call("GET", path, what=_what(args))     # 404 for a topic that is not there
    api.call("PUT", path, {"partitions": args.partitions})
    say(f"topic '{args.name}' has {args.partitions} partitions")


def delete(api, args) -> None:
    api.call("DELETE", f"/api/topics/{q(args.vhost)}/{q(args.name)}", what=_what(args))
    say(f"topic '{args.name}' deleted, with its partitions")


def _what(args) -> str:
    return f"topic '{args.name}' in vhost '{args.vhost}'"


def _exists(api, path: str) -> bool:
    return api.call("GET", path, ok=(404,)).get("error") is None


def register(commands, flags) -> None:
    topics = commands.add_parser("topics", help="partitioned topics (ours)").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    ls = topics.add_parser("list", help="the vhost's topics", parents=flags)
    add_output_flags(ls, COLUMNS)
    ls.set_defaults(run=list_topics)
    p = topics.add_parser("create", help="create a topic", parents=flags)
    p.add_argument("name")
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--type", choices=("stream", "classic", "quorum"),
                   help="the partitions' queue type (default stream)")
    p.set_defaults(run=create)
    p = topics.add_parser("add-partitions", parents=flags,
                          help="raise a topic's partition count to N (keys move)")
    p.add_argument("name")
    p.add_argument("partitions", type=int, metavar="N")
    p.set_defaults(run=add_partitions)
    p = topics.add_parser("delete", help="delete a topic and its partitions", parents=flags)
    p.add_argument("name")
    p.set_defaults(run=delete)
