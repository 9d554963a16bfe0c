"""``ctl policies``: list, set, clear (``/api/policies``; rabbitmqctl's ``list_policies``,
``set_policy``, ``clear_policy``)."""
from __future__ import annotations

import argparse
import json

from .api import add_output_flags, emit, q, say, vhost

COLUMNS = ("name", "pattern", "apply-to", "definition", "priority")


def _definition(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def list_policies(api, args) -> None:
    emit(api.call("GET", f"/api/policies/{q(args.vhost)}", what=vhost(args)), args)


def set_policy(api, args) -> None:
    body = {"pattern": args.pattern, "definition": args.definition,
            "priority": args.priority, "apply-to": args.apply_to}
    api.call("PUT", f"/api/policies/{q(args.vhost)}/{q(args.name)}", body, what=vhost(args))
    say(f"policy '{args.name}' set in vhost '{args.vhost}'")


def clear_policy(api, args) -> None:
    api.call("DELETE", f"/api/policies/{q(args.vhost)}/{q(args.name)}",
             what=f"policy '{args.name}' in vhost '{args.vhost}'")
    say(f"policy '{args.name}' cleared")


def register(commands, flags) -> None:
    policies = commands.add_parser("policies", help="policies").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = policies.add_parser("list", help="the vhost's policies", parents=flags)
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=list_policies)
    p = policies.add_parser("set", help="set a policy (its queues take it at once)",
                            parents=flags)
    p.add_argument("name")
    p.add_argument("pattern", help="regular expression searched in queue names")
    p.add_argument("definition", type=_definition,
                   help='JSON object, e.g. \'{"max-length": 1000}\'')
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--apply-to", default="all",
                   choices=("all", "queues", "exchanges", "classic_queues", "quorum_queues",
                            "streams"))
    p.set_defaults(run=set_policy)
    p = policies.add_parser("clear", help="delete a policy", parents=flags)
    p.add_argument("name")
    p.set_defaults(run=clear_policy)
