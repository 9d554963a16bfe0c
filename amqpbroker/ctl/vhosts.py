"""``ctl vhosts``: list, add, delete, trace (``/api/vhosts``; rabbitmqctl's ``list_vhosts``,
``add_vhost [--default-queue-type]``, ``delete_vhost``, ``trace_on`` / ``trace_off``). ``add``
of a vhost that exists sets its description and tags, and its default queue type if given;
``trace`` keeps them (the API's PUT empties what its body leaves out)."""
from __future__ import annotations

from .api import add_output_flags, emit, q, say

COLUMNS = ("name", "default_queue_type", "description", "messages")


def list_vhosts(api, args) -> None:
    emit(api.call("GET", "/api/vhosts?sort=name"), args)


def add(api, args) -> None:
    body = {"description": args.description, "tags": args.tags}
    if args.default_queue_type is not None:
        body["default_queue_type"] = args.default_queue_type
    api.call("PUT", f"/api/vhosts/{q(args.name)}", body)
    say(f"vhost '{args.name}' added")


def delete(api, args) -> None:
    api.call("DELETE", f"/api/vhosts/{q(args.name)}", what=f"vhost '{args.name}'")
    say(f"vhost '{args.name}' deleted")


def trace(api, args) -> None:
    vh = api.call("GET", f"/api/vhosts/{q(args.name)}", what=f"vhost '{args.name}'")
    body = {"description": vh.get("description", ""), "tags": vh.get("tags", []),
            "tracing": args.state == "on"}
    api.call("PUT", f"/api/vhosts/{q(args.name)}", body)
    say(f"tracing {args.state} in vhost '{args.name}'")


def register(commands, flags) -> None:
    vhosts = commands.add_parser("vhosts", help="virtual hosts").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = vhosts.add_parser("list", help="the vhosts", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_vhosts)
    p = vhosts.add_parser("add", help="add a vhost (or set an existing one's settings)",
                          parents=flags)
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--tags", default="", help="comma-separated")
    p.add_argument("--default-queue-type", choices=("classic", "quorum", "stream"),
                   help="the type of a queue declared without x-queue-type (when it can "
                        "be one: durable, not exclusive, not auto-delete)")
    p.set_defaults(run=add)
    p = vhosts.add_parser("delete", help="delete a vhost and everything in it",
                          parents=flags)
    p.add_argument("name")
    p.set_defaults(run=delete)
    p = vhosts.add_parser("trace", help="the firehose: copy every publish and delivery to "
                                        "amq.rabbitmq.trace (on), or stop (off)",
                          parents=flags)
    p.add_argument("name")
    p.add_argument("state", choices=("on", "off"))
    p.set_defaults(run=trace)
