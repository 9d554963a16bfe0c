"""Who may use the management API, and what each user sees: RabbitMQ's user tags.

As RabbitMQ's ``rabbit_web_dispatch_access_control.erl`` (3.10), with its reply texts:

* no management tag (none, or only tags of its own): no API access at all, 401
  "Not management user";
* ``management``: the vhosts it may log in to over AMQP (those it has permissions in), their
  queues and exchanges, and its own connections;
* ``policymaker``: as ``management``, plus the policies and parameters of those vhosts;
* ``monitoring``: as ``management``, plus every vhost's name, every connection and the node
  (``/api/nodes``, the node-wide totals in ``/api/overview``);
* ``administrator``: everything, and only it: users (with their password hashes),
  permissions, creating and deleting vhosts, definitions export and import.

``loopback_users`` (``guest``) are refused from any address but loopback, as over AMQP.
A refusal is 401 with ``error: not_authorised``; a failed login is 401 ``not_authorized``
with a ``WWW-Authenticate`` challenge (RabbitMQ spells the two differently).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Callable

from ..frontend.oauth2 import UnknownKey
from ..frontend.session import is_loopback
from .api import ApiError, not_found

log = logging.getLogger("amqpbroker.mgmt")

REALM = 'Basic realm="RabbitMQ Management"'
MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})


def is_admin(user) -> bool:
    return "administrator" in user.tags


def is_monitor(user) -> bool:
    return "administrator" in user.tags or "monitoring" in user.tags


def is_policymaker(user) -> bool:
    return "administrator" in user.tags or "policymaker" in user.tags


def login_vhosts(broker, user) -> list[str]:
    """The vhosts ``user`` may open over AMQP: those it has permissions in."""
    return [v for v in broker.vhosts if broker.users.can_access_vhost(user, v)]


def visible_vhosts(broker, user) -> list[str]:
    """The vhosts listed to ``user`` (RabbitMQ's ``list_visible_vhosts``)."""
    return list(broker.vhosts) if is_monitor(user) else login_vhosts(broker, user)


def object_vhosts(broker, user) -> list[str]:
    """The vhosts whose queues and exchanges ``user`` sees (RabbitMQ's ``filter_vhost``)."""
    return list(broker.vhosts) if is_admin(user) else login_vhosts(broker, user)


def listed_vhosts(call) -> list[str]:
    """The vhosts a list endpoint covers: the one in its path (404 if there is none), else
    every vhost whose objects the caller sees."""
    vhost = call.params.get("vhost")
    if vhost is None:
        return object_vhosts(call.broker, call.user)
    if vhost not in call.broker.vhosts:
        raise not_found()
    return [vhost]


@dataclass(frozen=True)
class Access:
    """An endpoint's rule: ``allows(broker, user, params)``, else 401 with ``reason``;
    ``who``, the rule in words (``/api/index.html``)."""
    reason: str
    allows: Callable
    who: str


def _vhost_matches(broker, user, params) -> bool:
    """A vhost in the path must be one ``user`` may log in to; a missing vhost passes (the
    handler answers 404), as RabbitMQ's ``user_matches_vhost``."""
    vhost = params.get("vhost")
    if vhost is None or vhost not in broker.vhosts:
        return True
    return broker.users.can_access_vhost(user, vhost)


MANAGEMENT = Access("", lambda broker, user, params: True, "any user with a management tag")
ADMINISTRATOR = Access("Not administrator user", lambda broker, user, params: is_admin(user),
                       "administrator")
MONITOR = Access("Not monitor user", lambda broker, user, params: is_monitor(user),
                 "monitoring (or administrator)")
VHOST = Access("User not authorised to access virtual host",
               lambda broker, user, params: is_admin(user)
               or _vhost_matches(broker, user, params),
               "a management user with access to the vhost")
# a vhost the user may see listed (RabbitMQ's is_authorized_vhost_visible): monitors see all
VHOST_VISIBLE = Access("User not authorised to access virtual host",
                       lambda broker, user, params: is_monitor(user)
                       or _vhost_matches(broker, user, params),
                       "a management user with access to the vhost (monitors: any)")
# for the policies and parameters of a vhost (RabbitMQ's is_authorized_policies)
POLICIES = Access("User not authorised to access object",
                  lambda broker, user, params: is_admin(user)
                  or (is_policymaker(user) and _vhost_matches(broker, user, params)),
                  "a policymaker with access to the vhost (or administrator)")


def refused(name: str, reason: str) -> ApiError:
    log.warning("HTTP access denied: user '%s' - %s", name, reason)
    return ApiError(401, reason, "not_authorised")


def authenticate(broker, authorization: str | None, peer: str | None):
    """The user of a request's basic-auth header (the broker's auth backends in order: a
    user and password, or an OAuth 2 token as the password), or of a bearer token (OAuth 2,
    as RabbitMQ's management with OAuth), or ApiError 401."""
    if authorization and authorization.startswith("Bearer "):
        name, password, backends = None, authorization[7:].strip(), ("oauth2",)
    elif authorization and authorization.startswith("Basic "):
        try:
            raw = base64.b64decode(authorization[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raw = ""
        name, _, password = raw.partition(":")
        backends = None
    else:
        raise ApiError(401, "Login failed", "not_authorized", {"WWW-Authenticate": REALM})
    user, why = broker.users.login(name, password, backends)
    if user is None:
        broker.stats.auth_attempt("http", False)
        log.warning("HTTP access denied: user '%s' - %s", name, why)
        raise ApiError(401, "Login failed", "not_authorized", {"WWW-Authenticate": REALM})
    name = user.name
    broker.stats.auth_attempt("http", True)
    if name in broker.config.loopback_users and not is_loopback(peer or ""):
        raise refused(name, "User can only log in via localhost")
    if not MANAGEMENT_TAGS.intersection(user.tags):
        raise refused(name, "Not management user")
    return user


async def authenticated(broker, authorization: str | None, peer: str | None):
    """``authenticate``, reading an OAuth 2 JWKS again (in a thread) when a token names a
    key it did not have."""
    try:
        return authenticate(broker, authorization, peer)
    except UnknownKey:
        await asyncio.get_running_loop().run_in_executor(None, broker.users.oauth2.refresh)
        return authenticate(broker, authorization, peer)


def authorize(access: Access, broker, user, params: dict) -> None:
    if not access.allows(broker, user, params):
        raise refused(user.name, access.reason)
