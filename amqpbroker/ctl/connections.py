"""``ctl connections``: list, close (``/api/connections``)."""
from __future__ import annotations

from .api import vhost, add_output_flags, emit, q, say

COLUMNS = ("name", "user", "vhost", "channels", "state", "client_properties.product")


def list_connections(api, args) -> None:
    path = ("/api/connections" if args.all_vhosts
            else f"/api/vhosts/{q(args.vhost)}/connections")
    emit(sorted(api.call("GET", path, what=vhost(args)), key=lambda c: c["name"]), args)


def close(api, args) -> None:
    api.call("DELETE", f"/api/connections/{q(args.name)}",
             headers={"X-Reason": args.reason})
    say(f"connection '{args.name}' closed: {args.reason}")


def register(commands, flags) -> None:
    conns = commands.add_parser("connections", help="client connections").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = conns.add_parser("list", help="the vhost's connections", parents=flags)
    p.add_argument("--all-vhosts", action="store_true", help="every vhost's connections")
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_connections)
    p = conns.add_parser("close", help="close a connection (the client sees "
                                       "CONNECTION_FORCED with the reason)", parents=flags)
    p.add_argument("name", help="as listed: '127.0.0.1:50312 -> 127.0.0.1:5672'")
    p.add_argument("--reason", default="Closed via amqpbroker ctl")
    p.set_defaults(run=close)
