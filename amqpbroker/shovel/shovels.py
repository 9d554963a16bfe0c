"""The node's dynamic shovels: their definitions (runtime parameters of component
``shovel``, durable: ``supervisor/definitions.py``) and the runners that move messages
(``runner.py``), in the metadata owner (the supervisor's process).

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

from ..frontend.auth import INTERNAL_SECRET_ENV
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
    def set(self, vhost: str, name: str, value: dict, definition: Definition | None = None,
            persist: bool = True) -> None:
        """Set shovel ``name`` of ``vhost`` (checked: ``definition.check``); its runner
        starts again if it ran."""
        definition = definition or check(value, name)
        self.values[(vhost, name)] = value
        if persist:
            self.broker.definitions.parameter_changed(vhost, COMPONENT, name, value)
        self._replace(vhost, name, definition)

    def clear(self, vhost: str, name: str, persist: bool = True) -> bool:
        if self.values.pop((vhost, name), None) is None:
            return False
        if persist:
            self.broker.definitions.parameter_changed(vhost, COMPONENT, name, None)
        self._replace(vhost, name, None)
        return True

    def vhost_deleted(self, vhost: str) -> None:
        """Its shovels go with it (the journal's vhost deletion holds theirs)."""
        for v, name in [k for k in self.values if k[0] == vhost]:
            self.clear(v, name, persist=False)

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
                self.broker.definitions.parameter_changed(shovel.vhost, COMPONENT,
                                                          shovel.name, None)

    def _replace(self, vhost: str, name: str, definition: Definition | None) -> None:
        old = self.running.pop((vhost, name), None)
        if old is not None:
            self._stop_soon(old)
        if definition is not None and self.started:
            shovel = self.running[(vhost, name)] = Shovel(self, vhost, name, definition)
            shovel.start()

    def _stop_soon(self, shovel: Shovel) -> None:
        task = asyncio.get_running_loop().create_task(shovel.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """The node is up: every shovel starts."""
        self.started = True
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
