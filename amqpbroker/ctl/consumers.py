"""``ctl consumers``: list (``/api/consumers``)."""
from __future__ import annotations

from .api import vhost, add_output_flags, emit, q

COLUMNS = ("queue.name", "consumer_tag", "channel_details.connection_name", "ack_required",
           "prefetch_count", "exclusive", "active")


def list_consumers(api, args) -> None:
    emit(api.call("GET", f"/api/consumers/{q(args.vhost)}", what=vhost(args)), args)


def register(commands, flags) -> None:
    consumers = commands.add_parser("consumers", help="consumers").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = consumers.add_parser("list", help="the vhost's consumers", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_consumers)
