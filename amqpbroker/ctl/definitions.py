"""``ctl definitions``: export and import users, vhosts, permissions, queues, exchanges,
bindings, topics (``/api/definitions``), RabbitMQ's file format both ways."""
from __future__ import annotations

import json
import sys

from .api import Usage, q, say


def _path(args) -> str:
    return f"/api/definitions/{q(args.vhost)}" if args.only_vhost else "/api/definitions"


def export(api, args) -> None:
    text = json.dumps(api.call("GET", _path(args)), indent=2) + "\n"
    if args.file == "-":
        sys.stdout.write(text)
        return
    try:
        with open(args.file, "w") as f:
            f.write(text)
    except OSError as exc:
        raise Usage(f"cannot write {args.file}: {exc.strerror}") from None
    say(f"definitions exported to {args.file}")


def import_(api, args) -> None:
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file) as f:
                text = f.read()
        body = json.loads(text)
    except OSError as exc:
        raise Usage(f"cannot read {args.file}: {exc.strerror}") from None
    except ValueError as exc:
        where = "stdin" if args.file == "-" else args.file
        raise Usage(f"{where} is not JSON: {exc}") from None
    api.call("POST", _path(args), body)
    say(f"definitions imported from {'stdin' if args.file == '-' else args.file}")


def register(commands, flags) -> None:
    defs = commands.add_parser("definitions", help="export / import the broker's "
                                                   "definitions").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    for name, run, text in (("export", export, "write the definitions to FILE (- = stdout)"),
                            ("import", import_, "apply the definitions in FILE (- = stdin)")):
        p = defs.add_parser(name, help=text, parents=flags)
        p.add_argument("file", nargs="?", default="-", metavar="FILE")
        p.add_argument("--only-vhost", action="store_true",
                       help="only the --vhost's (RabbitMQ's per-vhost format)")
        p.set_defaults(run=run)
