"""``/api/vhost-limits`` and ``/api/user-limits``: RabbitMQ's limits endpoints.

A vhost has ``max-connections`` and ``max-queues``, a user ``max-connections`` and
``max-channels``; each is an integer, below zero meaning no limit and 0 refusing every one
(``supervisor/tally.py`` and ``frontend/vhost.py`` enforce them). ``PUT .../{name}`` with
``{"value": N}`` sets one, ``DELETE`` clears it (204 even if it was not set), ``GET`` lists
``[{"vhost" | "user": ..., "value": {name: N}}]`` for those that have any (as RabbitMQ's
``rabbit_mgmt_wm_limit(s)`` and ``rabbit_mgmt_wm_user_limit(s)``, with their reasons for a
bad value or name). A change is answered once every front-end process has it, so the next
connection is checked against it. Differences: deleting a limit of a vhost or user that
does not exist is 404 here (RabbitMQ 3.10 answers 500).
"""
from __future__ import annotations

from ..frontend.events import acting
from . import access
from .api import ApiError, Route, bad_request, no_content, not_found
from .validation import LIMIT, USER_LIMITS, VHOST_LIMITS, check_limit

# ------------------------------------------------------------------------- vhosts
async def list_vhost_limits(call):
    b, vhost = call.broker, call.params.get("vhost")
    if vhost is None:
        names = access.visible_vhosts(b, call.user)
    elif vhost in b.vhosts:
        names = [vhost]
    else:
        raise not_found()
    return [{"vhost": n, "value": dict(b.vhosts[n].limits)} for n in names
            if b.vhosts[n].limits]


async def put_vhost_limit(call):
    b, name = call.broker, call.params["name"]
    vh = b.vhosts.get(call.params["vhost"])
    if vh is None:
        raise ApiError(404, "vhost_not_found", "not_found")
    value = call.body["value"]
    reason = check_limit(name, value, VHOST_LIMITS, "limits")
    if reason:
        raise bad_request(f"Validation failed\n\n{reason}\n")
    with acting(b, call.user.name):
        b.set_vhost_limits(vh, {**vh.limits, name: value})
    await b.sync_frontends()
    return no_content()


async def delete_vhost_limit(call):
    b = call.broker
    vh = b.vhosts.get(call.params["vhost"])
    if vh is None:
        raise ApiError(404, "vhost_not_found", "not_found")
    if call.params["name"] in vh.limits:
        with acting(b, call.user.name):
            b.set_vhost_limits(vh, {k: v for k, v in vh.limits.items()
                                    if k != call.params["name"]})
        await b.sync_frontends()
    return no_content()


# ------------------------------------------------------------------------- users
async def list_user_limits(call):
    users, name = call.broker.users.users, call.params.get("user")
    if name is not None and name not in users:
        raise not_found()
    chosen = [users[name]] if name is not None else users.values()
    return [{"user": u.name, "value": dict(u.limits)} for u in chosen if u.limits]


async def put_user_limit(call):
    b, name = call.broker, call.params["name"]
    user = b.users.users.get(call.params["user"])
    if user is None:
        raise ApiError(400, ["no_such_user", call.params["user"]])
    value = call.body["value"]
    reason = check_limit(name, value, USER_LIMITS, "user-limits")
    if reason:
        raise bad_request(reason)
    user.limits = {**user.limits, name: value}
    b.definitions.save()            # and tells the front-ends (UsersOp)
    await b.sync_frontends()
    return no_content()


async def delete_user_limit(call):
    b = call.broker
    user = b.users.users.get(call.params["user"])
    if user is None:
        raise ApiError(404, "user_not_found", "not_found")
    if call.params["name"] in user.limits:
        user.limits = {k: v for k, v in user.limits.items() if k != call.params["name"]}
        b.definitions.save()
        await b.sync_frontends()
    return no_content()


ROUTES = [
    Route("GET", "/api/vhost-limits", list_vhost_limits, access.MANAGEMENT),
    Route("GET", "/api/vhost-limits/{vhost}", list_vhost_limits, access.VHOST_VISIBLE),
    Route("PUT", "/api/vhost-limits/{vhost}/{name}", put_vhost_limit, access.ADMINISTRATOR,
          body=LIMIT),
    Route("DELETE", "/api/vhost-limits/{vhost}/{name}", delete_vhost_limit,
          access.ADMINISTRATOR),
    # RabbitMQ lets every management user read every user's limits (is_authorized_vhost_visible)
    Route("GET", "/api/user-limits", list_user_limits, access.MANAGEMENT),
    Route("GET", "/api/user-limits/{user}", list_user_limits, access.MANAGEMENT),
    Route("PUT", "/api/user-limits/{user}/{name}", put_user_limit, access.ADMINISTRATOR,
          body=LIMIT),
    Route("DELETE", "/api/user-limits/{user}/{name}", delete_user_limit, access.ADMINISTRATOR),
]
