"""``/api/permissions``: administrators only. The regexes are checked before they are
stored: one that does not compile (or is not a string) would refuse every AMQP operation of
the user it belongs to."""
from __future__ import annotations

from . import access
from .api import Route, bad_request, created, no_content, not_found
from .validation import PERMISSION


def _json(vhost: str, user: str, p) -> dict:
    return {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write,
            "read": p.read}


async def list_permissions(call):
    return [_json(v, u, p) for (v, u), p in call.broker.users.permissions.items()]


async def list_of_user(call):
    name = call.params["user"]
    if name not in call.broker.users.users:
        raise not_found()
    return [_json(v, u, p) for (v, u), p in call.broker.users.permissions.items() if u == name]


async def list_of_vhost(call):
    name = call.params["vhost"]
    if name not in call.broker.vhosts:
        raise not_found()
    return [_json(v, u, p) for (v, u), p in call.broker.users.permissions.items() if v == name]


async def get_permission(call):
    vhost, user = call.params["vhost"], call.params["user"]
    p = call.broker.users.permissions.get((vhost, user))
    if p is None:
        raise not_found()
    return _json(vhost, user, p)


async def put_permission(call):
    b, vhost, user = call.broker, call.params["vhost"], call.params["user"]
    if vhost not in b.vhosts or user not in b.users.users:
        raise bad_request("vhost_or_user_not_found")
    existed = (vhost, user) in b.users.permissions
    b.users.set_permissions(vhost, user, call.body["configure"], call.body["write"],
                            call.body["read"])
    b.definitions.save()
    return created(existed)


async def delete_permission(call):
    b = call.broker
    if b.users.permissions.pop((call.params["vhost"], call.params["user"]), None) is None:
        raise not_found()
    b.definitions.save()
    return no_content()


ROUTES = [
    Route("GET", "/api/permissions", list_permissions, access.ADMINISTRATOR),
    Route("GET", "/api/permissions/{vhost}/{user}", get_permission, access.ADMINISTRATOR),
    Route("PUT", "/api/permissions/{vhost}/{user}", put_permission, access.ADMINISTRATOR,
          body=PERMISSION),
    Route("DELETE", "/api/permissions/{vhost}/{user}", delete_permission,
          access.ADMINISTRATOR),
    Route("GET", "/api/users/{user}/permissions", list_of_user, access.ADMINISTRATOR),
    Route("GET", "/api/vhosts/{vhost}/permissions", list_of_vhost, access.ADMINISTRATOR),
]
