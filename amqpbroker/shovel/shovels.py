"""The node's dynamic shovels: their definitions (runtime parameters of component
``shovel``, durable: ``supervisor/definitions.py``; in a cluster, etcd keys every node
keeps: ``cluster/metadata.py``) and the runners that move messages (``runner.py``), in the
metadata owner (the supervisor's process). In a cluster the controller runs them all, and
its successor takes them over when it goes (RabbitMQ runs each dynamic shovel on one node
and moves it when that node goes, the same way).

Set, changed (the runner starts again with the new definition), cleared, restarted
(``DELETE /api/shovels/vhost/{vhost}/{name}/restart``), cleared with their vhost, and cleared by
themselves when ``src-delete-after`` is reached, as RabbitMQ's. They start with the node
(``start``, once its AMQP listener is up: a local URI connects to it) and stop before its
clients are disconnected.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets

from .. import contract as c
from ..frontend.auth import INTERNAL_SECRET_ENV
from ..frontend.events import emit_metadata
from .definition import Definition, check
from .runner import Shovel

log = logging.getLogger("amqpbroker.shovel")

COMPONENT = "shovel"


class Shovels:
    def __init__(self, broker):
        self.broker = broker
        self.values: dict[tuple[str, str], dict] = {}       # (vhost, name) -> value
        self.running: dict[tuple[str, str], Shovel] = {}
        self.started = False
        self._stopping: set = set()             # runners being stopped
        # the internal login its runners use on this node (frontend/auth.py); front-end
        # processes started from here inherit it
        secret = secrets.token_urlsafe(32)
        broker.users.internal_secret = secret
        os.environ[INTERNAL_SECRET_ENV] = secret

    # ------------------------------------------------------------ what the runners ask
    def internal_secret(self) -> str:
        return self.broker.users.internal_secret

    def local_address(self) -> tuple[str, int]:
        """Where this node's AMQP listener is reached from here."""
        amqp = next(entry for entry in self.broker.listeners if entry["protocol"] == "amqp")
        host = amqp["ip_address"]
        return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), amqp["port"]

    def cluster_name(self) -> str:
        return self.broker.cluster_name

    def node_name(self) -> str:
        from ..mgmt.overview import node_name
        return node_name(self.broker)

    # ------------------------------------------------------------ changes
    def set(self, vhost: str, name: str, value: dict,
            definition: Definition | None = None) -> None:
        """Set shovel ``name`` of ``vhost`` (checked: ``definition.check``); its runner
        starts again if it ran. The change goes to the definitions (and a cluster's etcd)
        as an op."""
        definition = definition or check(value, name)
        if self.values.get((vhost, name)) == value and (vhost, name) in self.running:
            return                          # the same again (a cluster's own change back)
        self.values[(vhost, name)] = value
        self.broker.changed(c.ParameterOp(vhost=vhost, component=COMPONENT, name=name,
                                          value=value))
        emit_metadata(self.broker, "parameter.set", {"component": COMPONENT, "name": name,
                                                     "vhost": vhost, "value": value})
        self._replace(vhost, name, definition)

    def clear(self, vhost: str, name: str, announce: bool = True) -> bool:
        if self.values.pop((vhost, name), None) is None:
            return False
        if announce:
            self.broker.changed(c.ParameterDeleted(vhost=vhost, component=COMPONENT,
                                                   name=name))
            emit_metadata(self.broker, "parameter.cleared",
                          {"component": COMPONENT, "name": name, "vhost": vhost})
        self._replace(vhost, name, None)
        return True

    def vhost_deleted(self, vhost: str) -> None:
        """Its shovels go with it (the vhost's deletion takes theirs everywhere)."""
        for v, name in [k for k in self.values if k[0] == vhost]:
            self.clear(v, name, announce=False)

    def restart(self, vhost: str, name: str) -> bool:
        if (vhost, name) not in self.values:
            return False
        self._replace(vhost, name, check(self.values[(vhost, name)], name))
        return True

    def finished(self, shovel: Shovel) -> None:
        """Its ``src-delete-after`` was reached: its parameter is deleted (it has stopped)."""
        key = (shovel.vhost, shovel.name)
        if self.running.get(key) is shovel:
            del self.running[key]
            if self.values.pop(key, None) is not None:
                self.broker.changed(c.ParameterDeleted(vhost=shovel.vhost,
                                                       component=COMPONENT, name=shovel.name))

    def _replace(self, vhost: str, name: str, definition: Definition | None) -> None:
        old = self.running.pop((vhost, name), None)
        if old is not None:
            self._stop_soon(old)
        if definition is not None and self.started and self.runs_here():
            shovel = self.running[(vhost, name)] = Shovel(self, vhost, name, definition)
            shovel.start()

    def runs_here(self) -> bool:
        """Whether this node runs the shovels: a single node does; in a cluster, the
        controller (one node, elected through etcd: ``cluster/controller.py``)."""
        cluster = self.broker.cluster
        return cluster is None or cluster.controller.is_controller()

    def _role(self, controller: bool) -> None:
        """This node became the controller (its shovels start) or stopped being it (they
        stop: the new controller runs them)."""
        if not self.started:
            return
        if controller:
            for (vhost, name), value in self.values.items():
                if (vhost, name) not in self.running:
                    self._replace(vhost, name, check(value, name))
        else:
            for shovel in self.running.values():
                self._stop_soon(shovel)
            self.running = {}

    def _stop_soon(self, shovel: Shovel) -> None:
        task = asyncio.get_running_loop().create_task(shovel.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """The node is up: every shovel starts (in a cluster, on the controller)."""
        self.started = True
        if self.broker.cluster is not None:
            self.broker.cluster.controller.on_role.append(self._role)
        for (vhost, name), value in self.values.items():
            self._replace(vhost, name, check(value, name))

    async def stop(self) -> None:
        self.started = False
        running, self.running = list(self.running.values()), {}
        await asyncio.gather(*(s.stop() for s in running), *list(self._stopping),
                             return_exceptions=True)

    # ------------------------------------------------------------ reading
    def items(self, vhost: str | None = None) -> list[dict]:
        """The parameters, as ``/api/parameters/shovel`` and the definitions list them."""
        return [{"value": value, "vhost": v, "component": COMPONENT, "name": name}
                for (v, name), value in self.values.items() if vhost in (None, v)]

    def status(self) -> list[dict]:
        """``/api/shovels``: one entry per shovel this node runs."""
        return [s.status() for s in self.running.values()]
