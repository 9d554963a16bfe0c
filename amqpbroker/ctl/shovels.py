"""``ctl shovels``: list (their status), set, delete, restart dynamic shovels
(``/api/shovels``, ``/api/parameters/shovel``; rabbitmqctl's ``shovel_status``,
``set_parameter shovel``, ``delete_shovel``, ``restart_shovel``)."""
from __future__ import annotations

import functools

from .api import add_output_flags, emit, q, say, vhost
from .args import json_object

COLUMNS = ("name", "vhost", "type", "state", "src_uri", "src_queue", "dest_uri", "dest_queue",
           "timestamp")


def list_shovels(api, args) -> None:
    emit(api.call("GET", f"/api/shovels/{q(args.vhost)}", what=vhost(args)), args)


def set_shovel(api, args) -> None:
    api.call("PUT", f"/api/parameters/shovel/{q(args.vhost)}/{q(args.name)}",
             {"value": args.definition}, what=vhost(args))
    say(f"shovel '{args.name}' set in vhost '{args.vhost}'")


def act_on_shovel(api, args, suffix: str, done: str) -> None:
    """``DELETE /api/shovels/vhost/{vhost}/{name}`` (and ``/restart``)."""
    api.call("DELETE", f"/api/shovels/vhost/{q(args.vhost)}/{q(args.name)}{suffix}",
             what=f"shovel '{args.name}' in vhost '{args.vhost}'")
    say(f"shovel '{args.name}' {done}")


def register(commands, flags) -> None:
    kind = commands.add_parser("shovels", help="dynamic shovels").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = kind.add_parser("list", help="the vhost's shovels and their state", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_shovels)
    p = kind.add_parser("set", help="define or change a shovel (it starts at once)",
                        parents=flags)
    p.add_argument("name")
    p.add_argument("definition", type=json_object,
                   help='JSON object, e.g. \'{"src-uri": "amqp://", "src-queue": "a", '
                        '"dest-uri": "amqp://", "dest-queue": "b"}\'')
    p.set_defaults(run=set_shovel)
    for verb, suffix, done in (("delete", "", "deleted"), ("restart", "/restart", "restarted")):
        p = kind.add_parser(verb, help=f"{verb} a shovel", parents=flags)
        p.add_argument("name")
        p.set_defaults(run=functools.partial(act_on_shovel, suffix=suffix, done=done))
