"""``/api/topic-permissions``: administrators only, as RabbitMQ. A topic permission narrows
what routing keys a user may publish with (``write``) and bind with (``read``) on one *topic
exchange* (``frontend/auth.py``); a (vhost, user) pair holds one per exchange.

RabbitMQ's answers, measured on 3.10.8: a PUT is 201 when the pair had no topic permission
before, else 204 (also for a new exchange); GET of a pair without any is 404. DELETE removes
all of the pair's, or with ``?exchange=X`` only that exchange's (ours: RabbitMQ 3.10 ignores
the query and removes all; removing less never widens what a user may do). RabbitMQ 3.13's
``/api/topic-permissions/{vhost}/{user}/{exchange}``: GET lists the pair's (as 3.13's does),
DELETE removes only that exchange's."""
from __future__ import annotations

from ..frontend.events import emit_as
from ..supervisor.definitions import topic_permission_item
from . import access
from .api import Route, bad_request, created, no_content, not_found
from .permissions import of_path
from .validation import TOPIC_PERMISSION


async def list_topic_permissions(call):
    return [topic_permission_item(k, p) for k, p in call.broker.users.topic_permissions.items()]


async def list_scoped(call):
    return of_path(call, call.broker.users.topic_permissions, topic_permission_item)


async def get_topic_permission(call):
    vhost, user = call.params["vhost"], call.params["user"]
    found = [topic_permission_item(k, p) for k, p in call.broker.users.topic_permissions.items()
             if k[0] == vhost and k[1] == user]
    if not found:
        raise not_found()
    return found


async def put_topic_permission(call):
    b, vhost, user = call.broker, call.params["vhost"], call.params["user"]
    if vhost not in b.vhosts or user not in b.users.users:
        raise bad_request("vhost_or_user_not_found")
    existed = any(k[0] == vhost and k[1] == user for k in b.users.topic_permissions)
    body = call.body
    b.users.set_topic_permissions(vhost, user, body["exchange"], body["write"], body["read"])
    b.definitions.save()
    emit_as(b, call.user.name, "topic.permission.created", {
        "user": user, "vhost": vhost, "exchange": body["exchange"], "write": body["write"],
        "read": body["read"]})
    return created(existed)


async def delete_topic_permission(call):
    b = call.broker
    exchange = call.params.get("exchange", call.query.get("exchange"))
    if not b.users.clear_topic_permissions(call.params["vhost"], call.params["user"],
                                           exchange):
        raise not_found()
    b.definitions.save()
    emit_as(b, call.user.name, "topic.permission.deleted",
            {"user": call.params["user"], "vhost": call.params["vhost"]})
    return no_content()


ROUTES = [
    Route("GET", "/api/topic-permissions", list_topic_permissions, access.ADMINISTRATOR),
    Route("GET", "/api/topic-permissions/{vhost}/{user}", get_topic_permission,
          access.ADMINISTRATOR),
    Route("PUT", "/api/topic-permissions/{vhost}/{user}", put_topic_permission,
          access.ADMINISTRATOR, body=TOPIC_PERMISSION),
    Route("DELETE", "/api/topic-permissions/{vhost}/{user}", delete_topic_permission,
          access.ADMINISTRATOR),
    Route("GET", "/api/topic-permissions/{vhost}/{user}/{exchange}", get_topic_permission,
          access.ADMINISTRATOR),
    Route("DELETE", "/api/topic-permissions/{vhost}/{user}/{exchange}",
          delete_topic_permission, access.ADMINISTRATOR),
    Route("GET", "/api/users/{user}/topic-permissions", list_scoped, access.ADMINISTRATOR),
    Route("GET", "/api/vhosts/{vhost}/topic-permissions", list_scoped, access.ADMINISTRATOR),
]
