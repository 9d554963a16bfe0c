"""``/api/policies``: RabbitMQ's policies (``amqpbroker/policies.py`` says what they do).

* ``GET /api/policies[/{vhost}]``: the policies of the vhosts the user may see them in;
* ``GET|PUT|DELETE /api/policies/{vhost}/{name}``; a PUT's body::

      {"pattern": "^orders", "definition": {"message-ttl": 60000}, "priority": 0,
       "apply-to": "queues"}

  is checked whole as RabbitMQ checks it (400 ``Validation failed`` with its reason), then
  set; the vhost's queues take their new arguments at once.

Who may, as in RabbitMQ 3.10: list, any management user (the policies of the vhosts it may
use); read, set and delete one policy, administrators and ``policymaker`` users in the vhosts
they have permissions in (``is_authorized_policies``).

``/api/operator-policies`` the same, for operator policies (policies.py: merged into a
queue's policy, the lower value winning; numeric limits only). Listed as policies are;
read, set and deleted by administrators only (RabbitMQ 3.10, measured: a policymaker gets
401 "Not administrator user").
"""
from __future__ import annotations

import functools
import logging

from ..frontend.events import acting
from ..policies import PolicyInvalid, make_policy, warn_without_effect
from . import access
from .api import ApiError, Route, bad_request, created, no_content, not_found
from .validation import anything

log = logging.getLogger("amqpbroker.mgmt")


def _vhost(call):
    vh = call.broker.vhosts.get(call.params["vhost"])
    if vh is None:
        raise ApiError(404, "vhost_not_found", "not_found")
    return vh


def _seen_vhosts(call) -> list[str]:
    vhost = call.params.get("vhost")
    if vhost is not None:
        return [_vhost(call).name]
    return access.object_vhosts(call.broker, call.user)


def _table(vh, operator: bool) -> dict:
    return vh.operator_policies if operator else vh.policies


async def list_policies(call, operator: bool = False):
    b = call.broker
    return [p.item() for v in _seen_vhosts(call)
            for p in _table(b.vhosts[v], operator).values()]


async def get_policy(call, operator: bool = False):
    vh = _vhost(call)
    policy = _table(vh, operator).get(call.params["name"])
    if policy is None:
        raise not_found()
    return policy.item()


async def put_policy(call, operator: bool = False):
    vh, name, body = _vhost(call), call.params["name"], call.body
    if not isinstance(body, dict):
        raise bad_request("Validation failed\n\ndefinition should be an object\n")
    missing = [k for k in ("pattern", "definition") if k not in body]
    if missing:                                 # RabbitMQ's with_decode
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")
    try:
        policy = make_policy(vh.name, name, body, operator=operator)
    except PolicyInvalid as exc:
        raise bad_request(f"Validation failed\n\n{exc}\n") from None
    warn_without_effect(policy, log)
    b = call.broker
    with acting(b, call.user.name):
        made = b.set_policy(policy)
    await b.definitions.durable()
    await b.policies_applied(vh.name)
    return created(not made)


async def delete_policy(call, operator: bool = False):
    b = call.broker
    vhost = _vhost(call).name
    with acting(b, call.user.name):
        if not b.delete_policy(vhost, call.params["name"], operator=operator):
            raise not_found()
    await b.definitions.durable()
    await b.policies_applied(vhost)
    return no_content()


ROUTES = [
    # listing: any management user, of the vhosts it may use (RabbitMQ's
    # rabbit_mgmt_wm_policies: is_authorized_vhost, filter_vhost); one policy: policymakers
    Route("GET", "/api/policies", list_policies, access.VHOST),
    Route("GET", "/api/policies/{vhost}", list_policies, access.VHOST),
    Route("GET", "/api/policies/{vhost}/{name}", get_policy, access.POLICIES),
    Route("PUT", "/api/policies/{vhost}/{name}", put_policy, access.POLICIES, body=anything),
    Route("DELETE", "/api/policies/{vhost}/{name}", delete_policy, access.POLICIES),
    # operator policies: listed alike; one, administrators only
    *(Route(method, path, functools.partial(handler, operator=True), rights, body=body)
      for method, path, handler, rights, body in (
          ("GET", "/api/operator-policies", list_policies, access.VHOST, None),
          ("GET", "/api/operator-policies/{vhost}", list_policies, access.VHOST, None),
          ("GET", "/api/operator-policies/{vhost}/{name}", get_policy, access.ADMINISTRATOR,
           None),
          ("PUT", "/api/operator-policies/{vhost}/{name}", put_policy, access.ADMINISTRATOR,
           anything),
          ("DELETE", "/api/operator-policies/{vhost}/{name}", delete_policy,
           access.ADMINISTRATOR, None))),
]
