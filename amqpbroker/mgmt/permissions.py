"""``/api/permissions``: administrators only. The regexes are checked before they are
stored: one that does not compile (or is not a string) would refuse every AMQP operation of
the user it belongs to."""
from __future__ import annotations

from ..frontend.events import emit_as
from ..supervisor.definitions import permission_item
from . import access
from .api import Route, bad_request, created, no_content, not_found
from .validation import PERMISSION


def of_path(call, table: dict, item) -> list[dict]:
    """The entries of ``table`` (keyed vhost, user, ...) of the path's user
    (``/api/users/{user}/...``) or vhost (``/api/vhosts/{vhost}/...``) as ``item`` shows
    them; 404 if that user or vhost does not exist."""
    b, params = call.broker, call.params
    if "user" in params:
        name, at, known = params["user"], 1, b.users.users
    else:
        name, at, known = params["vhost"], 0, b.vhosts
    if name not in known:
        raise not_found()
    return [item(k, p) for k, p in table.items() if k[at] == name]


async def list_permissions(call):
    return [permission_item(k, p) for k, p in call.broker.users.permissions.items()]


async def list_scoped(call):
    return of_path(call, call.broker.users.permissions, permission_item)


async def get_permission(call):
    vhost, user = call.params["vhost"], call.params["user"]
    p = call.broker.users.permissions.get((vhost, user))
    if p is None:
        raise not_found()
    return permission_item((vhost, user), p)


async def put_permission(call):
    b, vhost, user = call.broker, call.params["vhost"], call.params["user"]
    if vhost not in b.vhosts or user not in b.users.users:
        raise bad_request("vhost_or_user_not_found")
    existed = (vhost, user) in b.users.permissions
    b.users.set_permissions(vhost, user, call.body["configure"], call.body["write"],
                            call.body["read"])
    b.definitions.save()
    emit_as(b, call.user.name, "permission.created", {
        "user": user, "vhost": vhost, "configure": call.body["configure"],
        "write": call.body["write"], "read": call.body["read"]})
    return created(existed)


async def delete_permission(call):
    b = call.broker
    if b.users.permissions.pop((call.params["vhost"], call.params["user"]), None) is None:
        raise not_found()
    b.definitions.save()
    emit_as(b, call.user.name, "permission.deleted",
            {"user": call.params["user"], "vhost": call.params["vhost"]})
    return no_content()


ROUTES = [
    Route("GET", "/api/permissions", list_permissions, access.ADMINISTRATOR),
    Route("GET", "/api/permissions/{vhost}/{user}", get_permission, access.ADMINISTRATOR),
    Route("PUT", "/api/permissions/{vhost}/{user}", put_permission, access.ADMINISTRATOR,
          body=PERMISSION),
    Route("DELETE", "/api/permissions/{vhost}/{user}", delete_permission,
          access.ADMINISTRATOR),
    Route("GET", "/api/users/{user}/permissions", list_scoped, access.ADMINISTRATOR),
    Route("GET", "/api/vhosts/{vhost}/permissions", list_scoped, access.ADMINISTRATOR),
]
