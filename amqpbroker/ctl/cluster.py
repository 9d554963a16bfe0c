"""``ctl cluster``: the cluster's nodes as the node asked sees them (``/api/nodes``; see
docs/CLUSTER.md): name, state, whether it is the controller, its AMQP and management
addresses, how many partitions it leads and holds a replica of (``--partitions``: every
partition's leader, epoch, replicas and ISR, from ``/api/queues``). A single node lists
itself."""
from __future__ import annotations

from .api import add_output_flags, emit

COLUMNS = ("node", "state", "controller", "leads", "replicas", "amqp", "management")
PARTITION_COLUMNS = ("vhost", "queue", "leader", "epoch", "members", "isr", "online")


def _row(n: dict) -> dict:
    host = n.get("host", "localhost")
    return {**n, "node": n.get("node_name", n["name"]),
            "state": "draining" if n.get("draining") else
            n.get("state") or ("running" if n.get("running") else "down"),
            "controller": "yes" if n.get("controller") else "no",
            "leads": n.get("partitions_led", 0), "replicas": n.get("partition_replicas", 0),
            "amqp": f"{host}:{n.get('amqp_port', '')}",
            "management": f"{host}:{n.get('management_port', '')}"}


def _short(names) -> str:
    return ",".join(n.split("@", 1)[-1] for n in names or ())


def show(api, args) -> None:
    if not args.partitions:
        emit([_row(n) for n in api.call("GET", "/api/nodes")], args)
        return
    rows = [{"vhost": q["vhost"], "queue": q["name"], "leader": _short([q["leader"]])
             if q.get("leader") else "none", "epoch": q.get("leader_epoch"),
             "members": _short(q.get("members")), "isr": _short(q.get("isr")),
             "online": _short(q.get("online"))}
            for q in api.call("GET", "/api/queues") if "members" in q]
    args.default_columns = list(PARTITION_COLUMNS)
    emit(rows, args)


def register(commands, flags) -> None:
    p = commands.add_parser("cluster", parents=flags, help="the cluster's nodes")
    add_output_flags(p, COLUMNS)
    p.add_argument("--partitions", action="store_true",
                   help="every partition's leader, epoch, replicas and in-sync replicas")
    p.set_defaults(run=show)
