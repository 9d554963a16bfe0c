"""The management HTTP server (aiohttp): every resource module's routes, each request taken
through authentication, the route's access rule and its body schema before its handler (the
steps are listed in the package docstring)."""
from __future__ import annotations

from aiohttp import web

from . import (access, api_index, auth_attempts, bindings, channels, connections, definitions,
               deprecated_features, exchanges, feature_flags, federation, global_parameters,
               groups, health,
               limits, listing, overview, parameters, partitions, permissions, policies, queues,
               quorum_replicas, quorum_status, reassignments, shovels, stream_protocol,
               topic_permissions, topics, traces, users, vhosts)
from .api import ApiError, Call, Route, json_response
from .dashboard import add_routes as add_dashboard_routes
from .validation import Invalid, parse_json

RESOURCES = (overview, vhosts, users, permissions, queues, exchanges, bindings, connections,
             channels, definitions, limits, health, topics, groups, partitions, reassignments,
             policies, topic_permissions, parameters, global_parameters, shovels,
             feature_flags, auth_attempts, deprecated_features, quorum_status, quorum_replicas,
             traces, federation, stream_protocol)


class ManagementServer:
    def __init__(self, broker, amqp_server):
        self.broker = broker
        self.amqp = amqp_server
        self.runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[_errors_as_json])
        for module in RESOURCES:
            for route in module.ROUTES:
                endpoint = self._endpoint(route)
                # cowboy, RabbitMQ's HTTP server, reads a path with one trailing slash as the
                # path without it (``/api/queues/%2F/`` is ``/api/queues/%2F``), and clients
                # write either (amqpstorm's ``healthchecks/node/``): so do we
                for path in (route.path, route.path + "/"):
                    if route.method == "GET":           # and HEAD
                        self.app.router.add_get(path, endpoint)
                    else:
                        self.app.router.add_route(route.method, path, endpoint)
        add_dashboard_routes(self.app)              # the web UI at /, static files only
        api_index.add_routes(self.app, [r for m in RESOURCES for r in m.ROUTES])

    async def start(self, host: str, port: int, ssl_context=None):
        """Listen on host:port (HTTPS with ``ssl_context``); once per listener."""
        if self.runner is None:
            self.runner = web.AppRunner(self.app, access_log=None)
            await self.runner.setup()
        site = web.TCPSite(self.runner, host or None, port, ssl_context=ssl_context)
        await site.start()
        sock = site._server.sockets[0]
        host, port = sock.getsockname()[:2]
        self.broker.listeners.append({"protocol": "https" if ssl_context else "http",
                                      "ip_address": host, "port": port})
        return host, port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _endpoint(self, route: Route):
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                params = dict(request.match_info)
                user = None
                if not route.public:
                    user = await access.authenticated(self.broker, request.headers.get(
                        "Authorization"), request.remote)
                    access.authorize(route.access, self.broker, user, params)
                body = None if route.body is None else await _read_body(request, route)
                result = await route.handler(Call(self.broker, self.amqp, user, params, body,
                                                  request.query, request.headers,
                                                  request.method))
                if route.method == "GET" and isinstance(result, list):
                    result = listing.shape(result, request.query, route.sort)
                elif route.method == "GET" and isinstance(result, dict):
                    result = listing.one_object(result, request.query)
                elif route.method != "GET":     # in a cluster: on every node first
                    await self.broker.metadata.everywhere()
            except ApiError as err:
                return err.response()
            return result if isinstance(result, web.StreamResponse) else json_response(result)
        return endpoint


async def _read_body(request: web.Request, route: Route):
    """The body through the route's schema. A POST must say it is JSON: a browser may send a
    cross-site POST as text/plain or a form, with the credentials it has cached for this
    origin, but never a cross-site PUT or DELETE (those need a CORS preflight, which this
    server never grants), so PUT and DELETE take any content type, as RabbitMQ's do."""
    if request.method == "POST" and request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json", "unsupported_media_type")
    try:
        return route.body(parse_json(await request.read()), "")
    except Invalid as err:
        raise ApiError(400, str(err)) from None


@web.middleware
async def _errors_as_json(request, handler):
    """Unknown paths and methods answer in the API's JSON shape too."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return ApiError(404, "Not Found", "Object Not Found").response()
    except web.HTTPMethodNotAllowed as err:
        return ApiError(405, f"{request.method} not allowed", "Method Not Allowed",
                        {"Allow": ",".join(sorted(err.allowed_methods))}).response()
