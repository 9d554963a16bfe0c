"""RabbitMQ-compatible management HTTP API (the subset tools use most), on aiohttp.

Basic auth against the broker's users; JSON in and out, with RabbitMQ's paths and field names
(``/api/vhosts/{vhost}``, ``/api/users/{name}``, ``/api/permissions/{vhost}/{user}``,
``/api/queues``, ``/api/exchanges``, ``/api/definitions``). Vhost names are URL-encoded
(``%2F`` for ``/``).
"""
from __future__ import annotations

import base64
import json
import logging

from aiohttp import web

from ..frontend.auth import check_password

log = logging.getLogger("amqpbroker.mgmt")


def _json(data, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status,
                        content_type="application/json")


def _error(status: int, reason: str) -> web.Response:
    return _json({"error": {401: "not_authorised", 404: "Object Not Found"}.get(status, "bad_request"),
                  "reason": reason}, status)


class ManagementServer:
    def __init__(self, broker, amqp_server):
        self.broker = broker
        self.amqp = amqp_server
        self.runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/api/overview", self.overview)
        r.add_get("/api/nodes", self.nodes)
        r.add_get("/api/vhosts", self.vhosts)
        r.add_get("/api/vhosts/{vhost}", self.vhost_get)
        r.add_put("/api/vhosts/{vhost}", self.vhost_put)
        r.add_delete("/api/vhosts/{vhost}", self.vhost_delete)
        r.add_get("/api/users", self.users)
        r.add_get("/api/users/{name}", self.user_get)
        r.add_put("/api/users/{name}", self.user_put)
        r.add_delete("/api/users/{name}", self.user_delete)
        r.add_get("/api/permissions", self.permissions)
        r.add_get("/api/permissions/{vhost}/{user}", self.permission_get)
        r.add_put("/api/permissions/{vhost}/{user}", self.permission_put)
        r.add_delete("/api/permissions/{vhost}/{user}", self.permission_delete)
        r.add_get("/api/queues", self.queues)
        r.add_get("/api/queues/{vhost}", self.queues)
        r.add_get("/api/queues/{vhost}/{name}", self.queue_get)
        r.add_get("/api/exchanges", self.exchanges)
        r.add_get("/api/exchanges/{vhost}", self.exchanges)
        r.add_get("/api/exchanges/{vhost}/{name}", self.exchange_get)
        r.add_get("/api/connections", self.connections)
        r.add_get("/api/definitions", self.definitions_get)
        r.add_post("/api/definitions", self.definitions_post)
        self.app = app

    async def start(self, host: str, port: int):
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or None, port)
        await site.start()
        sock = site._server.sockets[0]
        return sock.getsockname()[:2]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _auth(self, request, handler):
        header = request.headers.get("Authorization", "")
        user = None
        if header.startswith("Basic "):
            try:
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                u = self.broker.users.users.get(name)
                if u is not None and check_password(password, u.password_hash):
                    user = u
            except (ValueError, UnicodeDecodeError):
                user = None
        if user is None:
            resp = _error(401, "Login failed")
            resp.headers["WWW-Authenticate"] = 'Basic realm="RabbitMQ Management"'
            return resp
        if request.method != "GET" and not user.is_admin:
            return _error(401, "Not administrator user")
        request["user"] = user
        return await handler(request)

    # ------------------------------------------------------------------ resources
    async def overview(self, request):
        queues = [q for vh in self.broker.vhosts.values() for q in vh.queues.values()]
        stats = (await self.broker.queue_stats(queues)).values()
        return _json({"management_version": "3.13.0", "rabbitmq_version": "3.13.0",
                      "product_name": "amqpbroker", "product_version": "0.1.0",
                      "cluster_name": self.amqp.server_properties["cluster_name"],
                      "node": "amqpbroker@localhost",
                      "object_totals": {"connections": len(await self.broker.connection_list(
                          self.amqp.sessions)),
                                        "queues": len(queues),
                                        "consumers": sum(s[1] for s in stats)},
                      "queue_totals": {"messages_ready": sum(s[0] for s in stats),
                                       "messages_unacknowledged": sum(s[2] for s in stats)}})

    async def nodes(self, request):
        import os
        import resource

        from ..frontend.alarms import node_rss, total_memory
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            fds = 0
        cfg = self.broker.config
        st = os.statvfs(self.broker.data_dir)
        return _json([{
            "name": "amqpbroker@localhost", "type": "disc", "running": True,
            "fd_total": soft, "fd_used": fds,
            # RabbitMQ reserves part of the descriptors for files; we need few besides sockets
            "sockets_total": max(soft - 256, 0),
            "sockets_used": len(await self.broker.connection_list(self.amqp.sessions)),
            "mem_used": node_rss(self.broker), "mem_limit": int(total_memory() * cfg.memory_high_watermark),
            "mem_alarm": "memory" in self.broker.alarms.active,
            "disk_free": st.f_bavail * st.f_frsize, "disk_free_limit": cfg.disk_free_limit,
            "disk_free_alarm": any(k.startswith("disk") for k in self.broker.alarms.active),
            "proc_used": 1 + len(self.broker.workers),
            "uptime": int(self.broker.loop.time() * 1000),
            # ours: the partition worker processes (see amqpbroker/supervisor)
            "workers": [{"index": w.index, "pid": w.pid, "restarts": w.restarts,
                         "running": w.client.link is not None} for w in self.broker.workers],
            "frontends": [{"index": f.index, "pid": f.pid, "restarts": f.restarts,
                           "running": f.running}
                          for f in self.broker.frontends]}])

    async def _vhost_json(self, vh):
        stats = await self.broker.queue_stats(list(vh.queues.values()))
        return {"name": vh.name, "description": vh.description, "tags": vh.tags,
                "messages": sum(s[0] for s in stats.values())}

    async def vhosts(self, request):
        return _json([await self._vhost_json(v) for v in self.broker.vhosts.values()])

    async def vhost_get(self, request):
        vh = self.broker.vhosts.get(request.match_info["vhost"])
        return _json(await self._vhost_json(vh)) if vh else _error(404, "Not Found")

    async def vhost_put(self, request):
        name = request.match_info["vhost"]
        body = await _body(request)
        existed = name in self.broker.vhosts
        self.broker.add_vhost(name, body.get("description", ""), body.get("tags") or [])
        if not existed:
            # RabbitMQ grants the creating user full permissions on a new vhost
            self.broker.users.set_permissions(name, request["user"].name)
            self.broker.definitions.save()
        return web.Response(status=204 if existed else 201)

    async def vhost_delete(self, request):
        ok = self.broker.delete_vhost(request.match_info["vhost"])
        return web.Response(status=204) if ok else _error(404, "Not Found")

    def _user_json(self, u):
        return {"name": u.name, "password_hash": u.password_hash,
                "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": u.tags}

    async def users(self, request):
        return _json([self._user_json(u) for u in self.broker.users.users.values()])

    async def user_get(self, request):
        u = self.broker.users.users.get(request.match_info["name"])
        return _json(self._user_json(u)) if u else _error(404, "Not Found")

    async def user_put(self, request):
        name = request.match_info["name"]
        body = await _body(request)
        tags = body.get("tags", "")
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        existed = name in self.broker.users.users
        if "password_hash" in body:
            self.broker.users.add_user(name, password_hash=body["password_hash"], tags=tags)
        else:
            self.broker.users.add_user(name, body.get("password", ""), tags=tags)
        self.broker.definitions.save()
        return web.Response(status=204 if existed else 201)

    async def user_delete(self, request):
        ok = self.broker.users.delete_user(request.match_info["name"])
        self.broker.definitions.save()
        return web.Response(status=204) if ok else _error(404, "Not Found")

    async def permissions(self, request):
        return _json([{"user": u, "vhost": v, "configure": p.configure, "write": p.write,
                       "read": p.read} for (v, u), p in self.broker.users.permissions.items()])

    async def permission_get(self, request):
        key = (request.match_info["vhost"], request.match_info["user"])
        p = self.broker.users.permissions.get(key)
        if p is None:
            return _error(404, "Not Found")
        return _json({"user": key[1], "vhost": key[0], "configure": p.configure,
                      "write": p.write, "read": p.read})

    async def permission_put(self, request):
        vhost, user = request.match_info["vhost"], request.match_info["user"]
        if vhost not in self.broker.vhosts or user not in self.broker.users.users:
            return _error(400, "vhost or user not found")
        body = await _body(request)
        self.broker.users.set_permissions(vhost, user, body.get("configure", ""),
                                          body.get("write", ""), body.get("read", ""))
        self.broker.definitions.save()
        return web.Response(status=201)

    async def permission_delete(self, request):
        key = (request.match_info["vhost"], request.match_info["user"])
        if self.broker.users.permissions.pop(key, None) is None:
            return _error(404, "Not Found")
        self.broker.definitions.save()
        return web.Response(status=204)

    @staticmethod
    def _queue_json(q, stats):
        ready, consumers, unacked, ready_bytes = stats
        return {"name": q.name, "vhost": q.vhost.name, "durable": q.durable,
                "auto_delete": q.auto_delete, "exclusive": q.exclusive_owner is not None,
                "arguments": q.arguments, "messages": ready + unacked,
                "messages_ready": ready, "messages_unacknowledged": unacked,
                "consumers": consumers, "type": "classic",
                "state": "running" if q.down is None else "down",
                "message_bytes_ready": ready_bytes, "node": "amqpbroker@localhost",
                "worker": q.client.index}       # ours: the partition worker that owns it

    async def queues(self, request):
        vname = request.match_info.get("vhost")
        vhs = [self.broker.vhosts[vname]] if vname in self.broker.vhosts else (
            [] if vname is not None else list(self.broker.vhosts.values()))
        queues = [q for vh in vhs for q in vh.queues.values()]
        stats = await self.broker.queue_stats(queues)
        return _json([self._queue_json(q, stats[q]) for q in queues])

    async def queue_get(self, request):
        vh = self.broker.vhosts.get(request.match_info["vhost"])
        q = vh.queues.get(request.match_info["name"]) if vh else None
        if q is None:
            return _error(404, "Not Found")
        stats = await self.broker.queue_stats([q])
        return _json(self._queue_json(q, stats[q]))

    @staticmethod
    def _exchange_json(vh, ex):
        return {"name": ex.name, "vhost": vh.name, "type": ex.type, "durable": ex.durable,
                "auto_delete": ex.auto_delete, "internal": ex.internal,
                "arguments": ex.arguments}

    async def exchanges(self, request):
        vname = request.match_info.get("vhost")
        return _json([self._exchange_json(vh, ex) for vh in self.broker.vhosts.values()
                      if vname is None or vh.name == vname for ex in vh.exchanges.values()])

    async def exchange_get(self, request):
        vh = self.broker.vhosts.get(request.match_info["vhost"])
        ex = vh.exchanges.get(request.match_info["name"]) if vh else None
        return _json(self._exchange_json(vh, ex)) if ex else _error(404, "Not Found")

    async def connections(self, request):
        return _json(await self.broker.connection_list(self.amqp.sessions))

    async def definitions_get(self, request):
        return _json(self.broker.definitions.export())

    async def definitions_post(self, request):
        self.broker.definitions.apply(await _body(request))
        await self.broker.resync_frontends()
        return web.Response(status=204)


async def _body(request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (ValueError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
