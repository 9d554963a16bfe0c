"""``/api/policies``: RabbitMQ's policies (``amqpbroker/policies.py`` says what they do).

* ``GET /api/policies[/{vhost}]``: the policies of the vhosts the user may see them in;
* ``GET|PUT|DELETE /api/policies/{vhost}/{name}``; a PUT's body::

      {"pattern": "^orders", "definition": {"message-ttl": 60000}, "priority": 0,
       "apply-to": "queues"}

  is checked whole as RabbitMQ checks it (400 ``Validation failed`` with its reason), then
  set; the vhost's queues take their new arguments at once.

Who may, as in RabbitMQ 3.10: list, any management user (the policies of the vhosts it may
use); read, set and delete one policy, administrators and ``policymaker`` users in the vhosts
they have permissions in (``is_authorized_policies``). ``GET /api/operator-policies``
answers an empty list (operator policies are not this broker's; rabbitmqadmin's ``list
operator_policies``).
"""
from __future__ import annotations

import logging

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


async def list_policies(call):
    b = call.broker
    return [p.item() for v in _seen_vhosts(call) for p in b.vhosts[v].policies.values()]


async def get_policy(call):
    policy = _vhost(call).policies.get(call.params["name"])
    if policy is None:
        raise not_found()
    return policy.item()


async def put_policy(call):
    vh, name, body = _vhost(call), call.params["name"], call.body
    if not isinstance(body, dict):
        raise bad_request("Validation failed\n\ndefinition should be an object\n")
    missing = [k for k in ("pattern", "definition") if k not in body]
    if missing:                                 # RabbitMQ's with_decode
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")
    try:
        policy = make_policy(vh.name, name, body)
    except PolicyInvalid as exc:
        raise bad_request(f"Validation failed\n\n{exc}\n") from None
    warn_without_effect(policy, log)
    b = call.broker
    made = b.set_policy(policy)
    await b.definitions.durable()
    await b.policies_applied(vh.name)
    return created(not made)


async def delete_policy(call):
    b = call.broker
    vhost = _vhost(call).name
    if not b.delete_policy(vhost, call.params["name"]):
        raise not_found()
    await b.definitions.durable()
    await b.policies_applied(vhost)
    return no_content()


async def list_operator_policies(call):
    return []


ROUTES = [
    # listing: any management user, of the vhosts it may use (RabbitMQ's
    # rabbit_mgmt_wm_policies: is_authorized_vhost, filter_vhost); one policy: policymakers
    Route("GET", "/api/policies", list_policies, access.VHOST),
    Route("GET", "/api/policies/{vhost}", list_policies, access.VHOST),
    Route("GET", "/api/policies/{vhost}/{name}", get_policy, access.POLICIES),
    Route("PUT", "/api/policies/{vhost}/{name}", put_policy, access.POLICIES, body=anything),
    Route("DELETE", "/api/policies/{vhost}/{name}", delete_policy, access.POLICIES),
    Route("GET", "/api/operator-policies", list_operator_policies, access.ADMINISTRATOR),
]
