"""``ctl federation``: the links' status, restart one, set or delete an upstream
(``/api/federation-links``, ``/api/parameters/federation-upstream``; rabbitmqctl's
``federation_status``, ``restart_federation_link``, ``set_parameter federation-upstream``,
``clear_parameter federation-upstream``). What is federated is a policy (``ctl policies``)."""
from __future__ import annotations

from .api import add_output_flags, emit, q, say, vhost
from .args import json_object

COLUMNS = ("type", "exchange", "queue", "upstream", "id", "status", "error", "uri", "node",
           "timestamp")


def status(api, args) -> None:
    emit(api.call("GET", f"/api/federation-links/{q(args.vhost)}", what=vhost(args)), args)


def restart(api, args) -> None:
    """A link by its ``id`` (``status`` lists it, with the node running it)."""
    links = api.call("GET", f"/api/federation-links/{q(args.vhost)}", what=vhost(args))
    link = next((x for x in links if x["id"] == args.id), None)
    node = link["node"] if link is not None else "-"
    api.call("DELETE", f"/api/federation-links/vhost/{q(args.vhost)}/{q(args.id)}/{q(node)}"
             f"/restart", what=f"federation link '{args.id}' in vhost '{args.vhost}'")
    say(f"federation link '{args.id}' restarted")


def set_upstream(api, args) -> None:
    api.call("PUT", f"/api/parameters/federation-upstream/{q(args.vhost)}/{q(args.name)}",
             {"value": args.definition}, what=vhost(args))
    say(f"federation upstream '{args.name}' set in vhost '{args.vhost}'")


def delete_upstream(api, args) -> None:
    api.call("DELETE", f"/api/parameters/federation-upstream/{q(args.vhost)}/{q(args.name)}",
             what=f"federation upstream '{args.name}' in vhost '{args.vhost}'")
    say(f"federation upstream '{args.name}' deleted")


def register(commands, flags) -> None:
    kind = commands.add_parser("federation", help="federation links and upstreams") \
        .add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = kind.add_parser("status", help="the vhost's federation links and their state",
                        parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=status)
    p = kind.add_parser("restart", help="restart a link (its id, from status)", parents=flags)
    p.add_argument("id")
    p.set_defaults(run=restart)
    p = kind.add_parser("set-upstream", help="define or change an upstream", parents=flags)
    p.add_argument("name")
    p.add_argument("definition", type=json_object,
                   help='JSON object, e.g. \'{"uri": "amqp://user:pass@rabbit-host/%%2F"}\'')
    p.set_defaults(run=set_upstream)
    p = kind.add_parser("delete-upstream", help="delete an upstream", parents=flags)
    p.add_argument("name")
    p.set_defaults(run=delete_upstream)
