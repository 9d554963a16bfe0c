"""``/api/parameters``: RabbitMQ's runtime parameters, per component and vhost. The components
this broker has: ``vhost-limits`` (a vhost's limits as the parameter ``limits``, as RabbitMQ
keeps them: ``limits.py`` is the other door to the same values), ``shovel`` (RabbitMQ's
dynamic shovels, ``amqpbroker/shovel``), ``federation-upstream`` and
``federation-upstream-set`` (``amqpbroker/federation``); the others RabbitMQ's plugins add
are not here: listed empty, and a PUT of one is 400 "component ... not found", as RabbitMQ
without those plugins answers.

Who may: reading, policymakers and administrators, over the vhosts they may log in to
(RabbitMQ's ``is_authorized_policies``); writing a shovel, the same, and a local URI (no
host) must name a vhost the user may log in to (RabbitMQ's ``validate_params_user``);
writing a vhost's limits, administrators only, as ``/api/vhost-limits`` (RabbitMQ 3.10 lets
a policymaker set them through this door).
"""
from __future__ import annotations

from ..federation import upstreams
from ..frontend.events import acting
from ..shovel import definition as shovel_definition
from ..shovel.shovels import COMPONENT as SHOVEL
from . import access
from .api import ApiError, Route, bad_request, created, no_content, not_found
from .validation import PARAMETER, VHOST_LIMITS, Invalid, limits_of

LIMITS = "vhost-limits"
limits_value = limits_of(VHOST_LIMITS, "limits")     # a vhost-limits parameter's value


def _item(vh) -> dict:
    return {"value": dict(vh.limits), "vhost": vh.name, "component": LIMITS, "name": "limits"}


async def list_parameters(call):
    b, p = call.broker, call.params
    vhost = p.get("vhost")
    if vhost is not None and vhost not in b.vhosts:
        raise not_found()
    component = p.get("component")
    names = access.visible_vhosts(b, call.user) if not access.is_admin(call.user) \
        else list(b.vhosts)
    out = []
    if component in (None, LIMITS):
        out += [_item(b.vhosts[n]) for n in names
                if b.vhosts[n].limits and vhost in (None, n)]
    if component in (None, SHOVEL):
        out += [item for n in names if vhost in (None, n) for item in b.shovels.items(n)]
    if component is None or component in upstreams.COMPONENTS:
        out += [item for n in names if vhost in (None, n)
                for item in b.federation.items(n, component)]
    return out


def _limits_of(call):
    """The vhost whose ``limits`` parameter the path names, or 404."""
    p = call.params
    vh = call.broker.vhosts.get(p["vhost"])
    if p["component"] != LIMITS or p["name"] != "limits" or vh is None:
        raise not_found()
    return vh


async def get_parameter(call):
    p = call.params
    if p["component"] in upstreams.COMPONENTS:
        key = (p["vhost"], p["component"], p["name"])
        if key not in call.broker.federation.values:
            raise not_found()
        return {"value": call.broker.federation.values[key], "vhost": p["vhost"],
                "component": p["component"], "name": p["name"]}
    if p["component"] == SHOVEL:
        value = call.broker.shovels.values.get((p["vhost"], p["name"]))
        if value is None:
            raise not_found()
        return {"value": value, "vhost": p["vhost"], "component": SHOVEL, "name": p["name"]}
    vh = _limits_of(call)
    if not vh.limits:
        raise not_found()
    return _item(vh)


async def put_parameter(call):
    b, p = call.broker, call.params
    if p["component"] == SHOVEL:
        return await _put_shovel(call)
    if p["component"] in upstreams.COMPONENTS:
        return await _put_upstream(call)
    if p["component"] != LIMITS:
        raise bad_request(f"Validation failed\n\ncomponent {p['component']} not found\n")
    if not access.is_admin(call.user):
        raise access.refused(call.user.name, access.ADMINISTRATOR.reason)
    if p["name"] != "limits":
        raise bad_request(f"Validation failed\n\nname {p['name']} is not limits: a vhost's "
                          f"limits are its parameter 'limits'\n")
    vh = b.vhosts.get(p["vhost"])
    if vh is None:
        raise ApiError(404, "vhost_not_found", "not_found")
    try:
        limits = limits_value(call.body["value"], "")
    except Invalid as err:          # RabbitMQ's wording of a refused parameter
        raise bad_request(f"Validation failed\n\n{err}\n") from None
    with acting(b, call.user.name):
        b.set_vhost_limits(vh, limits)
    await b.sync_frontends()
    return no_content()


async def _put_shovel(call):
    """A shovel set or changed: checked whole (RabbitMQ's reasons), stored (on disk before
    the answer), started."""
    b, p, user = call.broker, call.params, call.user
    if b.vhosts.get(p["vhost"]) is None:
        raise ApiError(404, "vhost_not_found", "not_found")

    def vhost_refusal(vhost: str) -> str | None:
        if vhost in b.vhosts and b.users.can_access_vhost(user, vhost):
            return None
        return f'user "{user.name}" may not connect to vhost "{vhost}"'
    try:
        checked = shovel_definition.check(call.body["value"], p["name"], vhost_refusal)
    except shovel_definition.Invalid as err:
        raise bad_request("Validation failed\n\n" + "".join(f"{r}\n" for r in err.reasons)) \
            from None
    existed = (p["vhost"], p["name"]) in b.shovels.values
    with acting(b, user.name):
        b.shovels.set(p["vhost"], p["name"], call.body["value"], checked)
    await b.definitions.durable()
    return created(existed)


async def _put_upstream(call):
    """A federation upstream or upstream set: checked whole (RabbitMQ's reasons), stored,
    and the links it feeds start again."""
    b, p = call.broker, call.params
    if b.vhosts.get(p["vhost"]) is None:
        raise ApiError(404, "vhost_not_found", "not_found")
    value = call.body["value"]
    try:
        upstreams.check(p["component"], p["name"], value)
    except upstreams.Invalid as err:
        raise bad_request("Validation failed\n\n" + "".join(f"{r}\n" for r in err.reasons)) \
            from None
    existed = (p["vhost"], p["component"], p["name"]) in b.federation.values
    with acting(b, call.user.name):
        b.federation.set(p["vhost"], p["component"], p["name"], value)
    await b.definitions.durable()
    return created(existed)


async def delete_parameter(call):
    p = call.params
    if p["component"] in upstreams.COMPONENTS:
        with acting(call.broker, call.user.name):
            cleared = call.broker.federation.clear(p["vhost"], p["component"], p["name"])
        if not cleared:
            raise not_found()
        await call.broker.definitions.durable()
        return no_content()
    if p["component"] == SHOVEL:
        with acting(call.broker, call.user.name):
            cleared = call.broker.shovels.clear(p["vhost"], p["name"])
        if not cleared:
            raise not_found()
        await call.broker.definitions.durable()
        return no_content()
    if not access.is_admin(call.user):
        raise access.refused(call.user.name, access.ADMINISTRATOR.reason)
    vh = _limits_of(call)
    if not vh.limits:
        raise not_found()
    with acting(call.broker, call.user.name):
        call.broker.set_vhost_limits(vh, {})
    await call.broker.sync_frontends()
    return no_content()


ROUTES = [
    Route("GET", "/api/parameters", list_parameters, access.POLICIES),
    Route("GET", "/api/parameters/{component}", list_parameters, access.POLICIES),
    Route("GET", "/api/parameters/{component}/{vhost}", list_parameters, access.POLICIES),
    Route("GET", "/api/parameters/{component}/{vhost}/{name}", get_parameter, access.POLICIES),
    Route("PUT", "/api/parameters/{component}/{vhost}/{name}", put_parameter,
          access.POLICIES, body=PARAMETER),
    Route("DELETE", "/api/parameters/{component}/{vhost}/{name}", delete_parameter,
          access.POLICIES),
]
