"""``/api/index.html``: the HTTP API's own index, as RabbitMQ serves its API's help page there
(``/api`` and ``/api/`` redirect to it). Ours is made from the routes themselves: every path,
its methods, and who may call each -- so it cannot drift from what the server answers. A
public page, as RabbitMQ's: it holds nothing that is not in the README."""
from __future__ import annotations

import html

from aiohttp import web

HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "frame-ancestors 'none'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def page(routes) -> str:
    """The index of ``routes`` (``api.Route``), one row per path and method, by path."""
    rows = []
    for route in sorted(routes, key=lambda r: (r.path, r.method)):
        who = "anyone (no login)" if route.public else route.access.who
        rows.append(f"<tr><td>{route.method}</td><td class=path>{html.escape(route.path)}</td>"
                    f"<td>{html.escape(who)}</td></tr>")
    return ("<!DOCTYPE html><html><head><meta charset=utf-8>"
            "<title>amqpbroker Management HTTP API</title><style>"
            "body{font:13px sans-serif;margin:1em 2em}td,th{border:1px solid #bbb;"
            "padding:3px 6px;text-align:left}table{border-collapse:collapse}"
            ".path{font-family:monospace}</style></head><body>"
            "<h1>amqpbroker Management HTTP API</h1>"
            "<p>RabbitMQ's management HTTP API: JSON in and out, HTTP basic authentication "
            "(or an OAuth 2 bearer token) on every request but those marked otherwise. "
            "A path with one trailing slash is the same path. See the README's "
            "\"Management API\" section for what each answers.</p>"
            f"<table><tr><th>method</th><th>path</th><th>who may call it</th></tr>"
            f"{''.join(rows)}</table></body></html>")


def add_routes(app: web.Application, routes) -> None:
    text = page(routes)

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/html", headers=HEADERS)

    async def to_index(_request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/api/index.html")

    app.router.add_get("/api/index.html", index)
    app.router.add_get("/api", to_index)
    app.router.add_get("/api/", to_index)
