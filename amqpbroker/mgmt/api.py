"""What every resource module is made of: a route, the call its handler gets, the errors and
statuses it returns (see the package docstring for the steps around a handler)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web


class ApiError(Exception):
    """A refusal, sent as RabbitMQ sends it: ``{"error": error, "reason": reason}``."""

    def __init__(self, status: int, reason: str, error: str = "bad_request",
                 headers: dict | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error = error
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.Response(text=json.dumps({"error": self.error, "reason": self.reason}),
                            status=self.status, content_type="application/json",
                            headers=self.headers)


def bad_request(reason: str) -> ApiError:
    return ApiError(400, reason)


def not_found() -> ApiError:
    return ApiError(404, "Not Found", "Object Not Found")


@dataclass
class Call:
    """One authorized request, as a handler sees it."""
    broker: Any                 # the supervisor's MetadataOwner
    amqp: Any                   # the supervisor's AMQP server (its local sessions)
    user: Any                   # frontend.auth.User, authenticated and authorized
    params: dict                # path parameters, URL-decoded (``vhost``, ``name``, ...)
    body: Any = None            # the body after its schema: checked and normalized
    query: Any = field(default_factory=dict)    # the query string (``sort``, ``page``, ...)
    headers: Any = field(default_factory=dict)  # the request's headers (``X-Reason``)
    method: str = "GET"


@dataclass(frozen=True)
class Route:
    """One endpoint: ``access`` decides who may call it (``access.py``); ``body``, when
    given, is the schema (``validation.py``) the body must pass before ``handler`` runs. A
    GET whose handler returns a list is sorted, paged and cut to columns by the query string
    (``listing.py``), ``sort`` naming its default sort keys."""
    method: str
    path: str
    handler: Callable[[Call], Awaitable[Any]]
    access: Any
    body: Callable[[Any, str], Any] | None = None
    sort: tuple = ("vhost", "name")
    public: bool = False        # answered without a login (``/api/auth``, read before one)


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status,
                        content_type="application/json")


def created(existed: bool) -> web.Response:
    """RabbitMQ's answer to a PUT: 201 when it made the object, 204 when it changed one."""
    return web.Response(status=204 if existed else 201)


def no_content() -> web.Response:
    return web.Response(status=204)



def from_amqp(err) -> ApiError:
    """An AMQP refusal of a management operation, as RabbitMQ's management answers it: 403
    is 401 "Access refused.", 404 is 404 with the reply's detail, the others 400 with it."""
    if err.reply_code == 403:
        return ApiError(401, "Access refused.", "not_authorised")
    if err.reply_code == 404:
        return ApiError(404, err.text, "not_found")
    return ApiError(400, err.text)


def flag_param(call, name: str) -> bool:
    """A query flag such as ``if-unused=true``."""
    return call.query.get(name) == "true"


def vhost_of(call):
    """The vhost in the path, or 404 ``vhost_not_found`` as RabbitMQ answers a PUT into a
    vhost that does not exist."""
    vh = call.broker.vhosts.get(call.params["vhost"])
    if vh is None:
        raise ApiError(404, "vhost_not_found", "not_found")
    return vh
