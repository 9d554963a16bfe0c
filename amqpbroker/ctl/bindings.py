"""``ctl bindings``: list, bind, unbind (``/api/bindings``). A binding is removed by its
properties key, which is taken from the listing between its two ends (RabbitMQ's key is the
server's to make, as rabbitmqadmin treats it)."""
from __future__ import annotations

from .api import vhost, Refused, add_output_flags, emit, q, say
from .args import key_values

COLUMNS = ("source", "destination", "destination_type", "routing_key", "arguments")
KINDS = {"queue": "q", "exchange": "e"}


def list_bindings(api, args) -> None:
    rows = api.call("GET", f"/api/bindings/{q(args.vhost)}", what=vhost(args))
    for r in rows:
        r["source"] = r["source"] or "(AMQP default)"
    emit(rows, args)


def _between(args) -> str:
    return (f"/api/bindings/{q(args.vhost)}/e/{q(args.source)}/"
            f"{KINDS[args.destination_type]}/{q(args.destination)}")


def bind(api, args) -> None:
    api.call("POST", _between(args), {"routing_key": args.routing_key,
                                      "arguments": dict(args.argument)})
    say(f"bound {args.destination_type} '{args.destination}' to exchange '{args.source}' "
        f"with routing key '{args.routing_key}'")


def unbind(api, args) -> None:
    path = _between(args)
    arguments = dict(args.argument)
    keys = [b["properties_key"] for b in api.call("GET", path)
            if b["routing_key"] == args.routing_key
            and (b.get("arguments") or {}) == arguments]
    if not keys:
        raise Refused(404, f"no binding from exchange '{args.source}' to "
                           f"{args.destination_type} '{args.destination}' with routing key "
                           f"'{args.routing_key}' in vhost '{args.vhost}'")
    api.call("DELETE", f"{path}/{q(keys[0])}")
    say(f"unbound {args.destination_type} '{args.destination}' from exchange "
        f"'{args.source}' (routing key '{args.routing_key}')")


def register(commands, flags) -> None:
    bindings = commands.add_parser("bindings", help="bindings").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = bindings.add_parser("list", help="the vhost's bindings", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_bindings)
    for name, run, text in (("bind", bind, "bind a queue (or exchange) to an exchange"),
                            ("unbind", unbind, "remove a binding")):
        p = bindings.add_parser(name, help=text, parents=flags)
        p.add_argument("source", help="the exchange messages come from")
        p.add_argument("destination", help="the queue (or exchange) they go to")
        p.add_argument("--routing-key", "-k", default="")
        p.add_argument("--destination-type", choices=tuple(KINDS), default="queue")
        p.add_argument("--argument", "-a", action="append", default=[], type=key_values,
                       metavar="KEY=VALUE", help="a binding argument; repeatable")
        p.set_defaults(run=run)
