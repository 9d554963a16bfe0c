"""``ctl policies`` and ``ctl operator-policies``: list, set, clear (``/api/policies``,
``/api/operator-policies``; rabbitmqctl's ``list_policies``, ``set_policy``,
``clear_policy`` and their ``_operator_`` forms)."""
from __future__ import annotations

import functools

from .api import add_output_flags, emit, q, say, vhost
from .args import json_object

COLUMNS = ("name", "pattern", "apply-to", "definition", "priority")
# (verb, API path, what one is called, its apply-to choices)
KINDS = (("policies", "/api/policies", "policy",
          ("all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams")),
         ("operator-policies", "/api/operator-policies", "operator policy",
          ("all", "queues", "exchanges")))


def list_policies(api, args, path: str) -> None:
    emit(api.call("GET", f"{path}/{q(args.vhost)}", what=vhost(args)), args)


def set_policy(api, args, path: str, called: str) -> None:
    body = {"pattern": args.pattern, "definition": args.definition,
            "priority": args.priority, "apply-to": args.apply_to}
    api.call("PUT", f"{path}/{q(args.vhost)}/{q(args.name)}", body, what=vhost(args))
    say(f"{called} '{args.name}' set in vhost '{args.vhost}'")


def clear_policy(api, args, path: str, called: str) -> None:
    api.call("DELETE", f"{path}/{q(args.vhost)}/{q(args.name)}",
             what=f"{called} '{args.name}' in vhost '{args.vhost}'")
    say(f"{called} '{args.name}' cleared")


def register(commands, flags) -> None:
    for verb, path, called, apply_to in KINDS:
        kind = commands.add_parser(verb, help=verb.replace("-", " ")).add_subparsers(
            dest="command", required=True, metavar="COMMAND")
        p = kind.add_parser("list", help=f"the vhost's {verb.replace('-', ' ')}",
                            parents=flags)
        add_output_flags(p, COLUMNS)
        p.set_defaults(run=functools.partial(list_policies, path=path))
        p = kind.add_parser("set", help=f"set {'an' if called[0] == 'o' else 'a'} {called} "
                            f"(its queues take it at once)", parents=flags)
        p.add_argument("name")
        p.add_argument("pattern", help="regular expression searched in queue names")
        p.add_argument("definition", type=json_object,
                       help='JSON object, e.g. \'{"max-length": 1000}\'')
        p.add_argument("--priority", type=int, default=0)
        p.add_argument("--apply-to", default="all", choices=apply_to)
        p.set_defaults(run=functools.partial(set_policy, path=path, called=called))
        p = kind.add_parser("clear", help=f"delete {'an' if called[0] == 'o' else 'a'} "
                            f"{called}", parents=flags)
        p.add_argument("name")
        p.set_defaults(run=functools.partial(clear_policy, path=path, called=called))
