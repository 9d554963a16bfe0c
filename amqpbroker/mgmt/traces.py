"""RabbitMQ's ``rabbitmq_tracing`` endpoints (amqpbroker/tracing.py; administrators only):
``/api/traces[/{vhost}[/{name}]]`` list, show, start (PUT) and stop (DELETE) traces;
``/api/trace-files[/{name}]`` list, download and delete their log files. The ``/node/{node}``
forms name this node. RabbitMQ 3.10's answers and 400 reasons (measured with the plugin)."""
from __future__ import annotations

import os

from aiohttp import web

from . import access
from .api import Route, bad_request, created, no_content, not_found
from .overview import node_name
from .validation import anything

_FILE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _node(call) -> None:
    node = call.params.get("node")
    if node is not None and node != node_name(call.broker):
        raise not_found()


def _vhost(call) -> str:
    vhost = call.params["vhost"]
    if vhost not in call.broker.vhosts:
        raise not_found()
    return vhost


async def list_traces(call):
    _node(call)
    vhost = _vhost(call) if "vhost" in call.params else None
    return call.broker.traces.listing(vhost)


async def get_trace(call):
    _node(call)
    vhost, name = _vhost(call), call.params["name"]
    tracer = call.broker.traces.running.get((vhost, name))
    if tracer is None:
        raise not_found()
    return tracer.json()


async def put_trace(call):
    """The plugin's checks, in its order, then the trace starts (RabbitMQ keeps one that
    runs already)."""
    _node(call)
    vhost, name, body = _vhost(call), call.params["name"], call.body
    if not isinstance(body, dict):
        raise bad_request("[{key_missing,format},{key_missing,pattern}]")
    missing = [k for k in ("format", "pattern") if k not in body]
    if missing:
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")
    max_payload = body.get("max_payload_bytes")
    if max_payload is not None and (isinstance(max_payload, bool)
                                    or not isinstance(max_payload, int)):
        raise bad_request("max_payload_bytes not integer")
    if body["format"] not in ("json", "text"):
        raise bad_request("format not json or text")
    if not isinstance(body["pattern"], str) or not set(name) <= _FILE_CHARS:
        raise bad_request("pattern and name must be strings; a name of letters, digits, "
                          "'.', '_' and '-'")
    await call.broker.traces.add(vhost, name, body["format"], body["pattern"], max_payload)
    return created(False)


async def delete_trace(call):
    _node(call)
    if not await call.broker.traces.delete(_vhost(call), call.params["name"]):
        raise not_found()
    return no_content()


def _file(call) -> str:
    name = call.params["name"]
    if not set(name) <= _FILE_CHARS or name.startswith("."):
        raise not_found()
    path = call.broker.traces.path(name)
    if not os.path.isfile(path):
        raise not_found()
    return path


async def list_files(call):
    _node(call)
    directory = call.broker.traces.directory
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [{"name": n, "size": os.path.getsize(os.path.join(directory, n))}
            for n in names if n.endswith(".log")]


async def get_file(call):
    _node(call)
    with open(_file(call), "rb") as f:
        return web.Response(body=f.read(), content_type="text/plain")


async def delete_file(call):
    _node(call)
    os.remove(_file(call))
    return no_content()


ROUTES = []
# the /node/{node} forms first: "/api/traces/node/x" is that node's, not a vhost "node"'s
# trace "x" (RabbitMQ's dispatcher order)
for base in ("/node/{node}", ""):
    ROUTES += [
        Route("GET", f"/api/traces{base}", list_traces, access.ADMINISTRATOR),
        Route("GET", f"/api/traces{base}/{{vhost}}", list_traces, access.ADMINISTRATOR),
        Route("GET", f"/api/traces{base}/{{vhost}}/{{name}}", get_trace, access.ADMINISTRATOR),
        Route("PUT", f"/api/traces{base}/{{vhost}}/{{name}}", put_trace, access.ADMINISTRATOR,
              body=anything),
        Route("DELETE", f"/api/traces{base}/{{vhost}}/{{name}}", delete_trace,
              access.ADMINISTRATOR),
        Route("GET", f"/api/trace-files{base}", list_files, access.ADMINISTRATOR),
        Route("GET", f"/api/trace-files{base}/{{name}}", get_file, access.ADMINISTRATOR),
        Route("DELETE", f"/api/trace-files{base}/{{name}}", delete_file, access.ADMINISTRATOR),
    ]
