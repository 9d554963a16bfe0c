"""``ctl queues``: list, declare, delete, purge (``/api/queues``)."""
from __future__ import annotations

from .api import vhost, add_output_flags, emit, q, say
from .args import key_values

COLUMNS = ("name", "type", "durable", "messages", "messages_ready",
           "messages_unacknowledged", "consumers", "state")


def list_queues(api, args) -> None:
    emit(api.call("GET", f"/api/queues/{q(args.vhost)}?sort=name", what=vhost(args)), args)


def declare(api, args) -> None:
    arguments = dict(args.argument)
    if args.type:
        arguments["x-queue-type"] = args.type
    body = {"durable": args.durable, "auto_delete": args.auto_delete,
            "arguments": arguments}
    api.call("PUT", f"/api/queues/{q(args.vhost)}/{q(args.name)}", body)
    say(f"queue '{args.name}' declared in vhost '{args.vhost}'")


def delete(api, args) -> None:
    conditions = [f"if-{c}=true" for c in ("unused", "empty") if getattr(args, "if_" + c)]
    query = "?" + "&".join(conditions) if conditions else ""
    api.call("DELETE", f"/api/queues/{q(args.vhost)}/{q(args.name)}{query}",
             what=_what(args))
    say(f"queue '{args.name}' deleted")


def purge(api, args) -> None:
    api.call("DELETE", f"/api/queues/{q(args.vhost)}/{q(args.name)}/contents",
             what=_what(args))
    say(f"queue '{args.name}' purged")


def register(commands, flags) -> None:
    queues = commands.add_parser("queues", help="queues").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = queues.add_parser("list", help="the vhost's queues, in name order", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_queues)
    p = queues.add_parser("declare", help="declare a queue (durable unless --transient)",
                          parents=flags)
    p.add_argument("name")
    p.add_argument("--transient", dest="durable", action="store_false",
                   help="not kept over a restart")
    p.add_argument("--auto-delete", action="store_true",
                   help="deleted when its last consumer goes")
    p.add_argument("--type", choices=("classic", "quorum", "stream"),
                   help="x-queue-type (default classic)")
    p.add_argument("--argument", "-a", action="append", default=[], type=key_values,
                   metavar="KEY=VALUE",
                   help="a queue argument (x-max-length=100); the value is read as JSON "
                        "when it is JSON, else as text; repeatable")
    p.set_defaults(run=declare)
    p = queues.add_parser("delete", help="delete a queue and its messages", parents=flags)
    p.add_argument("name")
    p.add_argument("--if-unused", action="store_true", help="only if it has no consumers")
    p.add_argument("--if-empty", action="store_true", help="only if it has no messages")
    p.set_defaults(run=delete)
    p = queues.add_parser("purge", help="remove a queue's ready messages", parents=flags)
    p.add_argument("name")
    p.set_defaults(run=purge)


def _what(args) -> str:
    return f"queue '{args.name}' in vhost '{args.vhost}'"
