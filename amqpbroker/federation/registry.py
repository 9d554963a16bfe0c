"""The node's federation: its upstream parameters (durable as runtime parameters:
``supervisor/definitions.py``; in a cluster, etcd keys every node keeps) and the links that
run from them (``links.py``), in the metadata owner (the supervisor's process).

Which links should run is worked out again (``reconcile``) after every metadata change the
owner makes (exchanges, queues, bindings, policies, parameters: ``changed``) and once a
second (a cluster's changes made on other nodes, the queues' consumers and messages): one
link per (federated exchange or queue, upstream) that a policy asks for. A link whose
upstream definition changed starts again (on the same upstream queue); one no longer wanted
stops and cleans up upstream; on a node that stops being the controller they stop and
leave the upstream as it is, for the next controller's.
An exchange link is given the exchange's bindings each time; a queue link is told to run
while its queue has consumers and no message ready.

In a cluster the controller runs the links, as it runs the shovels.
"""
from __future__ import annotations

import asyncio
import logging

from .. import contract as c
from ..frontend.events import emit_metadata
from ..shovel.definition import Uri
from . import upstreams
from .links import ExchangeLink, Link, QueueLink

log = logging.getLogger("amqpbroker.federation")

TICK = 1.0          # seconds between two reconciles when nothing changed


class Federation:
    def __init__(self, broker):
        self.broker = broker
        self.values: dict[tuple[str, str, str], object] = {}   # (vhost, component, name)
        self.links: dict[tuple, Link] = {}
        self.started = False
        self._soon: asyncio.Handle | None = None
        self._ticker: asyncio.Task | None = None
        self._stopping: set = set()

    # ------------------------------------------------------------ what the links ask
    def local_address(self):
        return self.broker.shovels.local_address()

    def internal_secret(self) -> str:
        return self.broker.shovels.internal_secret()

    def cluster_name(self) -> str:
        return self.broker.cluster_name

    def node_name(self) -> str:
        return self.broker.shovels.node_name()

    def check_interval(self) -> float:
        """Seconds between an exchange link's checks of its internal exchange upstream."""
        return self.broker.config.federation_check_interval / 1000

    def local_uri(self, vhost: str) -> Uri:
        return Uri("amqp://", None, 0, vhost, None, None, False)

    def exchange_info(self, vhost: str, name: str) -> dict | None:
        vh = self.broker.vhosts.get(vhost)
        ex = vh.exchanges.get(name) if vh is not None else None
        if ex is None:
            return None
        return {"type": ex.type, "durable": ex.durable, "auto_delete": ex.auto_delete,
                "internal": ex.internal, "arguments": dict(ex.arguments)}

    def queue_info(self, vhost: str, name: str) -> dict | None:
        vh = self.broker.vhosts.get(vhost)
        q = vh.queues.get(name) if vh is not None else None
        if q is None:
            return None
        return {"durable": q.durable, "auto_delete": q.auto_delete,
                "arguments": dict(q.arguments)}

    # ------------------------------------------------------------ parameters
    def set(self, vhost: str, component: str, name: str, value) -> None:
        """Set upstream (or upstream set) ``name`` of ``vhost`` (checked:
        ``upstreams.check``); the links it feeds start again."""
        upstreams.check(component, name, value)
        key = (vhost, component, name)
        if self.values.get(key) == value:
            return
        self.values[key] = value
        self.broker.changed(c.ParameterOp(vhost=vhost, component=component, name=name,
                                          value=value))
        emit_metadata(self.broker, "parameter.set", {"component": component, "name": name,
                                                     "vhost": vhost, "value": value})

    def clear(self, vhost: str, component: str, name: str, announce: bool = True) -> bool:
        if self.values.pop((vhost, component, name), None) is None:
            return False
        if announce:
            self.broker.changed(c.ParameterDeleted(vhost=vhost, component=component,
                                                   name=name))
            emit_metadata(self.broker, "parameter.cleared",
                          {"component": component, "name": name, "vhost": vhost})
        else:
            self.changed(None)
        return True

    def vhost_deleted(self, vhost: str) -> None:
        for key in [k for k in self.values if k[0] == vhost]:
            self.clear(*key, announce=False)

    def items(self, vhost: str | None = None, component: str | None = None) -> list[dict]:
        """As ``/api/parameters`` and the definitions list them."""
        return [{"value": value, "vhost": v, "component": comp, "name": name}
                for (v, comp, name), value in self.values.items()
                if vhost in (None, v) and component in (None, comp)]

    # ------------------------------------------------------------ links
    def changed(self, _op) -> None:
        """Metadata changed: reconcile once the current change is done."""
        if self.started and self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self._reconcile_now)

    def _reconcile_now(self) -> None:
        self._soon = None
        self.reconcile()

    def reconcile(self) -> None:
        """Start the links the policies ask for, stop the others (module doc)."""
        if not self.started:
            return
        if not self._runs_here():           # another node runs them: stopped, kept upstream
            for key in list(self.links):
                self._stop_soon(self.links.pop(key), cleanup=False)
            return
        wanted = self._wanted()
        for key in list(self.links):
            if key not in wanted:           # no longer federated: cleaned up upstream
                self._stop_soon(self.links.pop(key), cleanup=True)
            elif wanted[key][0] != self.links[key].upstream:    # changed: the same queue
                self._stop_soon(self.links.pop(key), cleanup=False)
        for key, (upstream, policy, cls) in wanted.items():
            if key not in self.links:
                link = self.links[key] = cls(self, key[1], key[2], upstream, policy)
                link.start()
        for key, link in self.links.items():
            if isinstance(link, ExchangeLink):
                link.set_bindings(self.bindings_of(key[1], key[2]))

    def _wanted(self) -> dict:
        """{(kind, vhost, name, upstream name): (Upstream, policy name, link class)}."""
        out = {}
        for vh in self.broker.vhosts.values():
            ups = self._of(vh.name, upstreams.UPSTREAM)
            if not ups:
                continue
            sets = self._of(vh.name, upstreams.UPSTREAM_SET)
            for ex in vh.exchanges.values():
                if ex.name == "" or ex.internal or ex.policy is None:
                    continue
                for u in upstreams.for_policy(ex.policy.definition, ups, sets, ex.name,
                                              vh.name):
                    out[("exchange", vh.name, ex.name, u.name)] = (u, ex.policy.name,
                                                                  ExchangeLink)
            for q in vh.queues.values():
                if q.policy is None or q.is_stream or "x-internal-purpose" in q.arguments:
                    continue            # streams are not federated (RabbitMQ 3.10)
                for u in upstreams.for_policy(q.policy.definition, ups, sets, q.name,
                                              vh.name):
                    out[("queue", vh.name, q.name, u.name)] = (u, q.policy.name, QueueLink)
        return out

    def _of(self, vhost: str, component: str) -> dict:
        return {n: value for (v, comp, n), value in self.values.items()
                if v == vhost and comp == component}

    def bindings_of(self, vhost: str, name: str) -> dict:
        """Exchange ``name``'s bindings, one per routing key and arguments:
        {(routing key, args key): (routing key, arguments)}."""
        vh = self.broker.vhosts.get(vhost)
        ex = vh.exchanges.get(name) if vh is not None else None
        return {(routing_key, args_key): (routing_key, arguments)
                for (_dest, routing_key, args_key), arguments in
                (ex.bindings.items() if ex is not None else ())}

    async def _queue_states(self) -> None:
        """Each queue link runs while its queue has consumers and nothing ready."""
        links = [link for link in self.links.values() if isinstance(link, QueueLink)]
        if not links:
            return
        refs = {}
        for link in links:
            vh = self.broker.vhosts.get(link.vhost)
            q = vh.queues.get(link.name) if vh is not None else None
            if q is not None:
                refs[link] = q
        stats = await self.broker.queue_stats(list(refs.values()))
        for link, q in refs.items():
            ready, consumers = stats.get(q, (0, 0))[:2]
            link.set_running(consumers > 0 and ready == 0)

    def _runs_here(self) -> bool:
        return self.broker.shovels.runs_here()

    def _stop_soon(self, link: Link, cleanup: bool) -> None:
        task = asyncio.get_running_loop().create_task(link.stop(cleanup))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _tick(self) -> None:
        while True:
            self.reconcile()
            try:
                await self._queue_states()
            except Exception:               # a worker restarting: next tick
                log.exception("federated queues' state not read")
            await asyncio.sleep(TICK)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.started = True
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        self.started = False
        if self._ticker is not None:
            self._ticker.cancel()
        links, self.links = list(self.links.values()), {}
        await asyncio.gather(*(link.stop(cleanup=False) for link in links),
                             *list(self._stopping), return_exceptions=True)

    # ------------------------------------------------------------ reading
    def status(self) -> list[dict]:
        """``/api/federation-links``: one entry per link this node runs."""
        return [link.status() for link in self.links.values()]

    def restart(self, vhost: str, link_id: str) -> bool:
        """Restart ``vhost``'s link ``link_id``; False if there is none."""
        for key, link in self.links.items():
            if link.id == link_id and link.vhost == vhost:
                self._stop_soon(link, cleanup=False)
                fresh = self.links[key] = type(link)(self, link.vhost, link.name,
                                                     link.upstream, link.policy)
                fresh.start()
                return True
        return False
