"""``/api/users``: administrators only, the only ones who see password hashes."""
from __future__ import annotations

from ..frontend.auth import HASHING, hash_password
from ..frontend.events import emit_as
from . import access
from .api import Route, bad_request, created, no_content, not_found
from .validation import BULK_DELETE, USER


def user_json(u) -> dict:
    return {"name": u.name, "password_hash": u.password_hash, "hashing_algorithm": HASHING,
            "tags": u.tags, "limits": u.limits}


async def list_users(call):
    return [user_json(u) for u in call.broker.users.users.values()]


async def get_user(call):
    u = call.broker.users.users.get(call.params["name"])
    if u is None:
        raise not_found()
    return user_json(u)


async def put_user(call):
    """Create or replace. Without a password (or hash) the user has none and cannot log in
    with any, as RabbitMQ's ``put_user`` (which clears the password of an existing user)."""
    users, name, body = call.broker.users, call.params["name"], call.body
    existed = name in users.users
    if "password" in body:
        users.add_user(name, body["password"], tags=body["tags"])
    else:
        users.add_user(name, password_hash=body["password_hash"], tags=body["tags"])
    call.broker.definitions.save()
    if not existed:
        emit_as(call.broker, call.user.name, "user.created", {"name": name})
    else:                               # as RabbitMQ's put_user of an existing user
        emit_as(call.broker, call.user.name, "user.password.changed", {"name": name})
        emit_as(call.broker, call.user.name, "user.tags.set",
                {"name": name, "tags": list(users.users[name].tags)})
    return created(existed)


async def delete_user(call):
    if not call.broker.users.delete_user(call.params["name"]):
        raise not_found()
    call.broker.definitions.save()
    emit_as(call.broker, call.user.name, "user.deleted", {"name": call.params["name"]})
    return no_content()


async def without_permissions(call):
    """Users with no permissions in any vhost (RabbitMQ's ``/api/users/without-permissions``:
    users that cannot open any vhost over AMQP)."""
    users = call.broker.users
    granted = {user for _, user in users.permissions}
    return [user_json(u) for u in users.users.values() if u.name not in granted]


async def bulk_delete(call):
    """``{"users": [names]}``: all of them, or none if one does not exist (400
    ``no_such_user``, RabbitMQ's reason; RabbitMQ 3.10 deletes those before the missing one)."""
    users, names = call.broker.users, call.body["users"]
    for name in names:
        if name not in users.users:
            raise bad_request(["no_such_user", name])
    for name in names:
        users.delete_user(name)
    call.broker.definitions.save()
    return no_content()


async def password_hash(call):
    """RabbitMQ 3.13's ``/api/auth/hash_password/{password}``: a hash of it as the
    definitions store one (``password_hash``, SHA-256 with a random salt), for a script
    that writes definitions without the password in them."""
    return {"ok": hash_password(call.params["password"])}


ROUTES = [
    # before /api/users/{name}, which would take these names
    Route("GET", "/api/users/without-permissions", without_permissions, access.ADMINISTRATOR),
    Route("POST", "/api/users/bulk-delete", bulk_delete, access.ADMINISTRATOR,
          body=BULK_DELETE),
    Route("GET", "/api/users", list_users, access.ADMINISTRATOR),
    Route("GET", "/api/users/{name}", get_user, access.ADMINISTRATOR),
    Route("PUT", "/api/users/{name}", put_user, access.ADMINISTRATOR, body=USER),
    Route("DELETE", "/api/users/{name}", delete_user, access.ADMINISTRATOR),
    Route("GET", "/api/auth/hash_password/{password}", password_hash, access.ADMINISTRATOR),
]
