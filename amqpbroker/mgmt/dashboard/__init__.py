"""The web dashboard: static files (HTML, CSS, plain JS modules, no build step) served at
``/`` of the management port; the pages read the same ``/api/...`` as any other client.

Theory of operation. The files are public, as RabbitMQ's UI is: nothing in them is secret and
every datum comes from the API, which asks for basic auth on each request. The browser code
keeps the credentials in ``sessionStorage`` (gone with the tab) and sends them itself in an
``Authorization`` header with ``credentials: "omit"``, so the browser never caches them and
never attaches them to a request another site makes it send; no cookie is ever set.

Only the files shipped in ``static/`` are served (a fixed table built at import, so no path
from a request reaches the file system), each with a Content-Security-Policy that allows
scripts, styles and connections from this origin only and no framing.
"""
from __future__ import annotations

import mimetypes
import os

from aiohttp import web

STATIC = os.path.join(os.path.dirname(__file__), "static")
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml", ".txt": "text/plain"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _shipped() -> dict[str, str]:
    """URL path under ``/static/`` -> file, for every file shipped in ``static/``."""
    files = {}
    for folder, _, names in os.walk(STATIC):
        for name in names:
            full = os.path.join(folder, name)
            files[os.path.relpath(full, STATIC).replace(os.sep, "/")] = full
    return files


FILES = _shipped()


def _serve(relpath: str) -> web.StreamResponse:
    full = FILES.get(relpath)
    if full is None:
        raise web.HTTPNotFound()
    ext = os.path.splitext(full)[1]
    ctype = TYPES.get(ext) or mimetypes.guess_type(full)[0] or "application/octet-stream"
    return web.FileResponse(full, headers={**HEADERS, "Content-Type": ctype})


async def index(request: web.Request) -> web.StreamResponse:
    return _serve("index.html")


async def static(request: web.Request) -> web.StreamResponse:
    return _serve(request.match_info["path"])


def add_routes(app: web.Application) -> None:
    """``/`` (the page) and ``/static/{path}`` (its files), without authentication."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
