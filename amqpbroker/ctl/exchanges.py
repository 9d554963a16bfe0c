"""``ctl exchanges``: list, declare, delete (``/api/exchanges``)."""
from __future__ import annotations

from .api import vhost, add_output_flags, emit, q, say
from .args import key_values

COLUMNS = ("name", "type", "durable", "auto_delete", "internal")


def list_exchanges(api, args) -> None:
    rows = api.call("GET", f"/api/exchanges/{q(args.vhost)}?sort=name", what=vhost(args))
    for r in rows:
        r["name"] = r["name"] or "(AMQP default)"       # as RabbitMQ's UI shows ""
    emit(rows, args)


def declare(api, args) -> None:
    body = {"type": args.type, "durable": args.durable, "auto_delete": args.auto_delete,
            "internal": args.internal, "arguments": dict(args.argument)}
    api.call("PUT", f"/api/exchanges/{q(args.vhost)}/{q(args.name)}", body)
    say(f"exchange '{args.name}' declared in vhost '{args.vhost}'")


def delete(api, args) -> None:
    query = "?if-unused=true" if args.if_unused else ""
    api.call("DELETE", f"/api/exchanges/{q(args.vhost)}/{q(args.name)}{query}",
             what=_what(args))
    say(f"exchange '{args.name}' deleted")


def register(commands, flags) -> None:
    exchanges = commands.add_parser("exchanges", help="exchanges").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = exchanges.add_parser("list", help="the vhost's exchanges", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_exchanges)
    p = exchanges.add_parser("declare", help="declare an exchange (durable unless "
                                             "--transient)", parents=flags)
    p.add_argument("name")
    p.add_argument("--type", default="direct",
                   help="direct (default), fanout, topic, headers, x-partitioned, ...")
    p.add_argument("--transient", dest="durable", action="store_false")
    p.add_argument("--auto-delete", action="store_true",
                   help="deleted when its last binding goes")
    p.add_argument("--internal", action="store_true", help="no direct publishing")
    p.add_argument("--argument", "-a", action="append", default=[], type=key_values,
                   metavar="KEY=VALUE", help="an exchange argument; repeatable")
    p.set_defaults(run=declare)
    p = exchanges.add_parser("delete", help="delete an exchange", parents=flags)
    p.add_argument("name")
    p.add_argument("--if-unused", action="store_true", help="only if it has no bindings")
    p.set_defaults(run=delete)


def _what(args) -> str:
    return f"exchange '{args.name}' in vhost '{args.vhost}'"
