"""``ctl cluster``: the cluster's nodes as the node asked sees them (``/api/nodes``; see
docs/CLUSTER.md): name, state, whether it is the controller, its AMQP and management
addresses. A single node lists itself."""
from __future__ import annotations

from .api import add_output_flags, emit

COLUMNS = ("node", "state", "controller", "amqp", "management")


def _row(n: dict) -> dict:
    host = n.get("host", "localhost")
    return {**n, "node": n.get("node_name", n["name"]),
            "state": n.get("state") or ("running" if n.get("running") else "down"),
            "controller": "yes" if n.get("controller") else "no",
            "amqp": f"{host}:{n.get('amqp_port', '')}",
            "management": f"{host}:{n.get('management_port', '')}"}


def show(api, args) -> None:
    emit([_row(n) for n in api.call("GET", "/api/nodes")], args)


def register(commands, flags) -> None:
    p = commands.add_parser("cluster", parents=flags, help="the cluster's nodes")
    add_output_flags(p, COLUMNS)
    p.set_defaults(run=show)
