"""``ctl reassign``, ``ctl drain``, ``ctl revive``: the controller's operator moves in a
cluster (docs/CLUSTER.md section 2; ``/api/reassignments``, ``/api/nodes/{name}/drain``).

    amqpbroker ctl reassign orders --replicas n1,n2,n4 [--wait]
    amqpbroker ctl drain n3 [--wait]        # every replica off n3; new queues avoid it
    amqpbroker ctl revive n3                # n3 takes new placements again

``--wait`` returns once the controller has done it (the reassignment is no longer in
progress; the drained node holds no replica), polling the API; exit 1 after ``--timeout``.

And ``rabbitmq-queues``' verbs for quorum queues (RabbitMQ 3.13's HTTP API,
mgmt/quorum_replicas.py), each a reassignment:

    amqpbroker ctl add-member orders n4       # a replica of quorum queue orders on n4
    amqpbroker ctl delete-member orders n1
    amqpbroker ctl grow n4 [--vhost-pattern .*] [--queue-pattern .*] [--strategy all|even]
    amqpbroker ctl shrink n1                  # every quorum queue's replica on n1 goes
    amqpbroker ctl rebalance                  # the leaders spread over the nodes
"""
from __future__ import annotations

import time

from .api import Refused, q, say


def _wait(done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise Refused(504, f"{what}: not done within {timeout:g}s (still in progress)")
        time.sleep(0.2)


def reassign(api, args) -> None:
    replicas = [n for n in args.replicas.split(",") if n]
    answer = api.call("PUT", f"/api/reassignments/{q(args.vhost)}/{q(args.queue)}",
                      {"replicas": replicas}, what=f"queue '{args.queue}'")
    parts = answer.get("partitions", [0]) if isinstance(answer, dict) else [0]
    say(f"reassigning queue '{args.queue}' ({len(parts)} partition"
        f"{'s' if len(parts) != 1 else ''}) to {','.join(replicas)}")
    if args.wait:
        _wait(lambda: not any(r["vhost"] == args.vhost and r["queue"] == args.queue
                              for r in api.call("GET", "/api/reassignments")),
              args.timeout, f"reassignment of '{args.queue}'")
        say("done")


def _holds(api, node: str) -> int:
    for n in api.call("GET", "/api/nodes"):
        if n.get("node_name", n["name"]) == node or n["name"] == node:
            return n.get("partition_replicas", 0)
    return 0


def drain(api, args) -> None:
    api.call("PUT", f"/api/nodes/{q(args.node)}/drain", what=f"node '{args.node}'")
    say(f"node '{args.node}' is draining")
    if args.wait:
        _wait(lambda: _holds(api, args.node) == 0, args.timeout, f"drain of '{args.node}'")
        say(f"node '{args.node}' holds no replica")


def revive(api, args) -> None:
    api.call("DELETE", f"/api/nodes/{q(args.node)}/drain", what=f"node '{args.node}'")
    say(f"node '{args.node}' takes new placements again")


def add_member(api, args) -> None:
    api.call("POST", f"/api/queues/quorum/{q(args.vhost)}/{q(args.queue)}/replicas/add",
             {"node": args.node}, what=f"queue '{args.queue}'")
    say(f"queue '{args.queue}': a replica on {args.node} asked for")


def delete_member(api, args) -> None:
    api.call("DELETE", f"/api/queues/quorum/{q(args.vhost)}/{q(args.queue)}/replicas/delete",
             {"node": args.node}, what=f"queue '{args.queue}'")
    say(f"queue '{args.queue}': its replica on {args.node} removed")


def grow(api, args) -> None:
    api.call("POST", f"/api/queues/quorum/replicas/on/{q(args.node)}/grow",
             {"vhost_pattern": args.vhost_pattern, "queue_pattern": args.queue_pattern,
              "strategy": args.strategy}, what=f"node '{args.node}'")
    say(f"node '{args.node}': a replica of each matching quorum queue asked for")


def shrink(api, args) -> None:
    api.call("DELETE", f"/api/queues/quorum/replicas/on/{q(args.node)}/shrink",
             what=f"node '{args.node}'")
    say(f"node '{args.node}': the quorum queues' replicas there removed")


def rebalance(api, args) -> None:
    api.call("POST", "/api/rebalance/queues")
    say("the quorum queues' and streams' leaders are being spread over the nodes")


def register(commands, flags) -> None:
    p = commands.add_parser("reassign", parents=flags,
                            help="move a queue's replicas to other nodes (a cluster)")
    p.add_argument("queue")
    p.add_argument("--replicas", required=True,
                   help="the new replicas, comma-separated; the first is the preferred leader")
    p.add_argument("--wait", action="store_true", help="return once it is done")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for --wait")
    p.set_defaults(run=reassign)
    for name, run, text in (("drain", drain, "move every replica off a node; new queues "
                                             "avoid it (a cluster)"),
                            ("revive", revive, "end a drain: the node takes new placements")):
        p = commands.add_parser(name, parents=flags, help=text)
        p.add_argument("node")
        if run is drain:
            p.add_argument("--wait", action="store_true",
                           help="return once the node holds no replica")
            p.add_argument("--timeout", type=float, default=60.0, help="seconds for --wait")
        p.set_defaults(run=run)
    for name, run, text in (("add-member", add_member, "a replica of a quorum queue on a node"),
                            ("delete-member", delete_member,
                             "remove a quorum queue's replica on a node")):
        p = commands.add_parser(name, parents=flags, help=text + " (rabbitmq-queues')")
        p.add_argument("queue")
        p.add_argument("node")
        p.set_defaults(run=run)
    p = commands.add_parser("grow", parents=flags,
                            help="a replica on a node for every matching quorum queue")
    p.add_argument("node")
    p.add_argument("--vhost-pattern", default=".*")
    p.add_argument("--queue-pattern", default=".*")
    p.add_argument("--strategy", choices=("all", "even"), default="all",
                   help="even: only queues with an even number of replicas")
    p.set_defaults(run=grow)
    p = commands.add_parser("shrink", parents=flags,
                            help="remove every quorum queue's replica on a node")
    p.add_argument("node")
    p.set_defaults(run=shrink)
    p = commands.add_parser("rebalance", parents=flags,
                            help="spread the quorum queues' and streams' leaders")
    p.set_defaults(run=rebalance)
