"""``ctl alarms``: the resource alarms in effect (RabbitMQ's health check
``/api/health/checks/alarms``). Exit 0 and "no alarms" when there are none; exit 1 with
the broker's reason on stderr and the alarms listed on stdout when there are, so a script
or a probe can use the status alone."""
from __future__ import annotations

import sys

from .api import Refused, add_output_flags, emit

COLUMNS = ("node", "resource")


def show(api, args) -> None:
    answer = api.call("GET", "/api/health/checks/alarms", ok=(503,))
    if answer.get("status") == "ok":
        if args.format == "json":
            emit([], args)
        else:
            print("no alarms in effect")
        return
    emit(answer.get("alarms", []), args)
    sys.stdout.flush()
    raise Refused(503, answer.get("reason", "health check failed"))


def register(commands, flags) -> None:
    p = commands.add_parser("alarms", parents=flags,
                            help="the memory and disk alarms in effect (exit 1 if any)")
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=show)
