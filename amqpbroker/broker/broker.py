"""The broker core: vhosts, users, durable metadata, group commit, alarms, dead-lettering.

It is I/O-free apart from storage; connections (``server/session.py``) call into it.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
import uuid

from ..config import Config
from ..protocol import properties as props_mod
from ..storage.record import Record
from .alarms import Alarms
from .auth import Users
from .committer import Committer
from .definitions import Definitions
from .queue import now_ms
from .vhost import VirtualHost

log = logging.getLogger("amqpbroker.broker")


class Broker:
    def __init__(self, config: Config, loop):
        self.config = config
        self.loop = loop
        self.users = Users()
        self.vhosts: dict[str, VirtualHost] = {}
        self.sessions: set = set()
        self.cache_used = 0
        self.data_dir = os.path.abspath(config.data_dir)
        self.definitions = Definitions(self, os.path.join(self.data_dir, "definitions.json"))
        self.committer = Committer(self)
        self.alarms = Alarms(self)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        os.makedirs(os.path.join(self.data_dir, "queues"), exist_ok=True)
        transient = os.path.join(self.data_dir, "transient")
        shutil.rmtree(transient, ignore_errors=True)     # non-durable queues die with the node
        os.makedirs(transient, exist_ok=True)
        data = self.definitions.load_file()
        if data is None:
            cfg = self.config
            self.definitions.loading = True
            self.users.add_user(cfg.default_user, cfg.default_pass, tags=["administrator"])
            self.add_vhost("/", "Default virtual host")
            self.users.set_permissions("/", cfg.default_user)
            self.definitions.loading = False
            self.definitions.save()
        else:
            self.definitions.apply(data)
        self._remove_orphan_queue_dirs()
        self.alarms.start()

    def _remove_orphan_queue_dirs(self) -> None:
        """A crash between deleting a queue and saving definitions can leave its directory."""
        known = {os.path.basename(q.directory) for vh in self.vhosts.values()
                 for q in vh.queues.values() if q.durable}
        root = os.path.join(self.data_dir, "queues")
        for name in os.listdir(root):
            if name not in known:
                log.warning("removing orphan queue directory %s", name)
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def close(self) -> None:
        self.alarms.stop()
        self.definitions.close()
        self.committer.drain()
        for vh in self.vhosts.values():
            vh.close()

    # ------------------------------------------------------------ vhosts
    def add_vhost(self, name: str, description: str = "", tags=()) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(self, name, description, tags)
            self.vhosts[name] = vh
            self.definitions.save()
        return vh

    def delete_vhost(self, name: str) -> bool:
        vh = self.vhosts.pop(name, None)
        if vh is None:
            return False
        for s in list(self.sessions):
            if s.vhost is vh:
                s.force_close(f"vhost '{name}' is deleted")
        for q in list(vh.queues.values()):
            vh.delete_queue(q)
        for key in [k for k in self.users.permissions if k[0] == name]:
            del self.users.permissions[key]
        self.definitions.save()
        return True

    def queue_directory(self, vhost: VirtualHost, name: str, durable: bool) -> str:
        if not durable:
            return os.path.join(self.data_dir, "transient", uuid.uuid4().hex)
        digest = hashlib.sha1(f"{vhost.name}\x00{name}".encode()).hexdigest()
        return os.path.join(self.data_dir, "queues", digest)

    # ------------------------------------------------------------ dead-lettering
    def dead_letter(self, queue, records, reason: str) -> None:
        """Republish to the queue's dead-letter exchange with RabbitMQ's x-death headers."""
        dlx_name = queue.args.dlx
        if dlx_name is None or queue.deleted and reason != "rejected":
            return
        vhost = queue.vhost
        ex = vhost.exchanges.get(dlx_name)
        if ex is None:
            return
        for rec in records:
            props = props_mod.decode(rec.properties)
            headers = dict(props.headers or {})
            cc = _str_list(headers.get("CC"))
            routing_keys = [rec.routing_key] + cc
            deaths = [dict(d) for d in (headers.get("x-death") or []) if isinstance(d, dict)]
            death = None
            for d in deaths:
                if d.get("queue") == queue.name and d.get("reason") == reason:
                    death = d
                    deaths.remove(d)
                    break
            if death is None:
                death = {"count": 0, "reason": reason, "queue": queue.name,
                         "exchange": rec.exchange, "routing-keys": routing_keys}
            death["count"] = int(death.get("count", 0)) + 1
            death["time"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
            if props.expiration is not None:
                death["original-expiration"] = props.expiration
                props.expiration = None
            deaths.insert(0, death)
            headers["x-death"] = deaths
            headers.setdefault("x-first-death-reason", reason)
            headers.setdefault("x-first-death-queue", queue.name)
            headers.setdefault("x-first-death-exchange", rec.exchange)
            props.headers = headers
            if queue.args.dlrk is not None:
                keys = [queue.args.dlrk]
            else:
                keys = routing_keys
            raw = props_mod.encode(props)
            new = Record(now_ms(), dlx_name, keys[0], raw, rec.body, rec.flags)
            targets = vhost.route(ex, keys, headers)
            priority = props.priority or 0
            for q in targets:
                if q is queue and reason == "expired" and queue.args.dlrk is None \
                        and not any(d.get("reason") == "rejected" for d in deaths):
                    continue      # RabbitMQ drops an expiry cycle back into the same queue
                q.publish(new, priority)


def _str_list(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in v]
    return [v.decode() if isinstance(v, bytes) else str(v)]
