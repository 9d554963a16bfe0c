"""``amqpbroker ctl``: manage a running broker through its management HTTP API (ours, or
RabbitMQ's: the paths and shapes are RabbitMQ's, so ctl works against either).

    amqpbroker ctl queues list [--format json] [--columns name,messages]
    amqpbroker ctl queues declare jobs [--type quorum] [-a x-max-length=1000]
    amqpbroker ctl publish --routing-key jobs 'hello'      (or the body on stdin)
    amqpbroker ctl get jobs --count 10 --ackmode ack_requeue_false
    amqpbroker ctl definitions export backup.json
    amqpbroker ctl vhosts add prod --default-queue-type quorum
    amqpbroker ctl policies set cap '^orders' '{"max-length": 1000}' --apply-to queues
    amqpbroker ctl shovels set in '{"src-uri": "amqp://rabbit", "src-queue": "jobs",
                                    "dest-uri": "amqp://", "dest-queue": "jobs"}'
    amqpbroker ctl reassign orders --replicas n1,n2,n4      (a cluster; also drain, revive)

Connection flags, before or after the command, with rabbitmqadmin's defaults; each can be
set in the environment: --url (http://localhost:15672, AMQPBROKER_CTL_URL), --user and
--password (guest, AMQPBROKER_CTL_USER / _PASSWORD), --vhost (/, AMQPBROKER_CTL_VHOST).

Exit status: 0 done; 1 refused by the broker (its reason on stderr); 2 bad command line or
unreadable input file; 3 cannot connect to --url.

Each command family is one module with ``register(commands, flags)``: ``topics``,
``queues``, ``exchanges``, ``bindings``, ``connections``, ``consumers``, ``messages``
(publish, get), ``definitions``, ``alarms``, ``vhosts``, ``policies``, ``shovels``, ``access``
(users, permissions, topic permissions, the cluster name); consumer groups go in ``groups.py``,
listed in ``FAMILIES`` the same way.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import (access, alarms, bindings, cluster, connections, consumers, definitions,
               exchanges, federation, groups, messages, policies, queues, reassign, shovels,
               topics, vhosts)
from .api import OK, Api, CtlError

FAMILIES = (queues, exchanges, bindings, connections, consumers, messages, definitions,
            topics, groups, alarms, cluster, reassign, vhosts, policies, shovels, federation,
            access)

DEFAULTS = {"url": "http://localhost:15672", "user": "guest", "password": "guest",
            "vhost": "/"}


def _connection_flags(leaf: bool) -> argparse.ArgumentParser:
    """The connection flags, taken before the command or after it (on a command, absent
    flags leave what was given before it)."""
    p = argparse.ArgumentParser(add_help=False)
    for name, default in DEFAULTS.items():
        env = "AMQPBROKER_CTL_" + name.upper()
        p.add_argument("--" + name,
                       default=argparse.SUPPRESS if leaf else os.environ.get(env, default),
                       help=f"management API {name} (default {default}) [env {env}]")
    return p


def parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="amqpbroker ctl", description=head,
                                epilog=rest.split("\n\nEach command")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[_connection_flags(False)])
    commands = p.add_subparsers(dest="family", required=True, metavar="COMMAND")
    flags = [_connection_flags(True)]
    for family in FAMILIES:
        family.register(commands, flags)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)        # a bad command line exits 2 here
    try:
        args.run(Api(args.url, args.user, args.password), args)
    except CtlError as err:
        sys.stdout.flush()
        print(f"Error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        return 130                          # as a shell reports SIGINT
    except BrokenPipeError:                 # `ctl queues list | head`
        return OK
    return OK
