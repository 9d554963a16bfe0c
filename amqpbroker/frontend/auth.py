"""Users, password hashes and per-vhost permissions, checked as RabbitMQ checks them.

Passwords are stored as RabbitMQ's ``rabbit_password_hashing_sha256`` hashes
(base64 of a 4-byte salt followed by SHA-256(salt + password)), so definitions exported from
RabbitMQ import unchanged. Permissions are three regexes per (vhost, user): configure (declare,
delete), write (publish, bind to a queue), read (consume, get, bind from an exchange).

Topic permissions (RabbitMQ's topic authorisation, AMQP *topic exchanges*, not this broker's
partitioned topics) narrow them per (vhost, user, exchange): a publish to a topic exchange
needs its routing key matched by ``write``, a binding from one (queue or exchange, made or
removed) its binding key matched by ``read``. Without a topic permission for the exchange,
anything goes, as in RabbitMQ. ``{username}`` and ``{vhost}`` in a pattern are replaced
before it is matched, unescaped, as RabbitMQ replaces them; an empty pattern is ``^$``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import logging
import re
import struct
from dataclasses import dataclass, field

from pamqp import decode

from .. import errors, pcre
from .oauth2 import TokenRefused, UnknownKey

log = logging.getLogger("amqpbroker.auth")

HASHING = "rabbit_password_hashing_sha256"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_password(password: str, password_hash: str) -> bool:
    """An empty password never logs in, nor does any password a user without a password
    hash (RabbitMQ's passwordless users), as RabbitMQ's internal backend refuses both."""
    if not password or not password_hash:
        return False
    try:
        raw = base64.b64decode(password_hash)
    except (ValueError, TypeError):
        return False
    salt = raw[:4]
    return hmac.compare_digest(raw, salt + hashlib.sha256(salt + password.encode()).digest())


def _amqplain(response: bytes) -> tuple[str | None, str | None]:
    """LOGIN and PASSWORD of an AMQPLAIN response (a field table without its length), as
    strings; (None, None) for a table that does not decode or holds other types there (a
    table as LOGIN, a number as PASSWORD): a refused login, as RabbitMQ refuses a non-string
    PASSWORD."""
    try:
        _, table = decode.field_table(len(response).to_bytes(4, "big") + response)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError, TypeError):
        return None, None
    found = []
    for key in ("LOGIN", "PASSWORD"):
        value = table.get(key)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode(errors="replace")
        if not isinstance(value, str):
            return None, None
        found.append(value)
    return found[0], found[1]


@dataclass
class User:
    name: str
    password_hash: str
    tags: list = field(default_factory=list)
    limits: dict = field(default_factory=dict)   # max-connections, max-channels
    internal: bool = False      # the broker's own (shovels): no permission checks
    grants: object = None       # an OAuth 2 token's (oauth2.Grants): its permissions

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags


# the login of the broker's own connections to itself (its shovels, shovel/runner.py), as
# RabbitMQ's direct connections: user "none" is allowed everything; a user name with the
# secret logs in as that user, with its permissions. The secret is made at each start and
# passed to the front-end processes in their environment (``INTERNAL_SECRET_ENV``).
INTERNAL_USER = "none"
INTERNAL_SECRET_ENV = "AMQPBROKER_INTERNAL_SECRET"


@dataclass
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, kind: str, name: str) -> bool:
        pattern = getattr(self, kind)
        if pattern == "":
            return False
        try:        # RabbitMQ's re:run: PCRE, matched anywhere in the name (pcre.py)
            return pcre.search(pattern, name)
        except (re.error, TypeError):       # a pattern stored before the API checked them
            return False


@dataclass
class TopicPermission:
    write: str = ".*"
    read: str = ".*"

    def allows(self, kind: str, routing_key: str, user: str, vhost: str) -> bool:
        pattern = getattr(self, kind) or "^$"
        pattern = pattern.replace("{username}", user).replace("{vhost}", vhost)
        try:
            return pcre.search(pattern, routing_key)
        except (re.error, TypeError):       # e.g. a user name that breaks the pattern
            return False


class Users:
    def __init__(self, oauth2=None, backends=("internal",)):
        self.oauth2 = oauth2            # oauth2.OAuth2 when "oauth2" is among the backends
        self.backends = backends        # RabbitMQ's auth_backends, in order
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}
        # (vhost, user, exchange): what routing keys of that topic exchange the user may use
        self.topic_permissions: dict[tuple[str, str, str], TopicPermission] = {}
        self.internal_secret = ""       # the internal login's password ("": none)

    def add_user(self, name: str, password: str | None = None, *, password_hash: str | None = None,
                 tags=()) -> User:
        if password_hash is None:
            password_hash = hash_password(password) if password else ""
        old = self.users.get(name)      # a user replaced keeps its limits, as in RabbitMQ
        user = User(name, password_hash, list(tags), dict(old.limits) if old else {})
        self.users[name] = user
        return user

    def delete_user(self, name: str) -> bool:
        if self.users.pop(name, None) is None:
            return False
        for table in (self.permissions, self.topic_permissions):
            for key in [k for k in table if k[1] == name]:
                del table[key]
        return True

    def forget_vhost(self, name: str) -> None:
        """A vhost was deleted: the permissions in it go with it (RabbitMQ's)."""
        for table in (self.permissions, self.topic_permissions):
            for key in [k for k in table if k[0] == name]:
                del table[key]

    def set_permissions(self, vhost: str, user: str, configure=".*", write=".*", read=".*"):
        self.permissions[(vhost, user)] = Permission(configure, write, read)

    def set_topic_permissions(self, vhost: str, user: str, exchange: str, write=".*",
                              read=".*"):
        self.topic_permissions[(vhost, user, exchange)] = TopicPermission(write, read)

    def clear_topic_permissions(self, vhost: str, user: str, exchange: str | None = None) -> bool:
        """Those of ``user`` in ``vhost``: all, or only ``exchange``'s. False if none was."""
        keys = [k for k in self.topic_permissions if k[0] == vhost and k[1] == user
                and (exchange is None or k[2] == exchange)]
        for key in keys:
            del self.topic_permissions[key]
        return bool(keys)

    def authenticate(self, mechanism: str, response: bytes, certificate=None) -> User:
        """Check a SASL response; raise ConnectionAccessRefused (403) as RabbitMQ words it.
        ``certificate`` (``tls.CertificateLogin``) is given on TLS connections only, where
        EXTERNAL logs in as the user it names, without a password."""
        username = password = None
        if mechanism == "EXTERNAL" and certificate is not None:
            return self._external(certificate)
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) == 3:
                username, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
        elif mechanism == "AMQPLAIN":
            username, password = _amqplain(response)
        else:
            raise errors.ConnectionAccessRefused(f"unsupported authentication mechanism "
                                                 f"'{mechanism}'", 10, 11)
        if self.internal_secret and password is not None \
                and hmac.compare_digest(password.encode(), self.internal_secret.encode()):
            internal = self._internal(username)
            if internal is not None:
                return internal
        user, why = self.login(username, password)
        if user is not None:
            return user
        err = errors.ConnectionAccessRefused(
            f"Login was refused using authentication mechanism {mechanism}. For details "
            f"see the broker logfile.", 10, 11)
        # answered with connection.close, if the client asks; the reason goes to the log
        err.login_failed = f"{mechanism} login refused: user '{username}' - {why}"
        err.login_user = username
        raise err

    def login(self, username: str | None, password: str | None,
              backends: tuple | None = None) -> tuple[User | None, str]:
        """(the user, "") of a user name and password, or (None, why not), asking each
        backend in order (RabbitMQ's auth_backends: the first that accepts): ``internal``,
        the broker's users; ``oauth2``, a JWT as the password (oauth2.py)."""
        why = "invalid credentials"
        for backend in backends or self.backends:
            if backend == "oauth2" and self.oauth2 is not None and password:
                try:
                    name, tags, grants = self.oauth2.login(password, username)
                except UnknownKey:
                    raise                   # the caller reads the JWKS again, then retries
                except TokenRefused as exc:
                    why = f"Authentication using an OAuth 2/JWT token failed: {exc}"
                    continue
                return User(name, "", tags, grants=grants), ""
            if backend == "internal":
                user = self.users.get(username) if username is not None else None
                if user is not None and password is not None \
                        and check_password(password, user.password_hash):
                    return user, ""
        return None, why

    def _internal(self, username: str | None) -> User | None:
        """The internal login's user: "none", allowed everything, or the user named."""
        if username == INTERNAL_USER:
            return User(INTERNAL_USER, "", ["administrator", "impersonator"], internal=True)
        return self.users.get(username) if username is not None else None

    def _external(self, certificate) -> User:
        user = self.users.get(certificate.name) if certificate.name is not None else None
        if user is None:
            err = errors.ConnectionAccessRefused(
                "Login was refused using authentication mechanism EXTERNAL. For details see "
                "the broker logfile.", 10, 11)
            err.login_failed = "EXTERNAL login refused: " + (
                certificate.refused or f"user '{certificate.name}' - invalid credentials")
            err.login_user = certificate.name
            raise err
        return user

    def can_access_vhost(self, user: User, vhost: str) -> bool:
        if user.grants is not None:
            return user.grants.vhost(vhost)
        return user.internal or (vhost, user.name) in self.permissions

    def check(self, user: User, vhost: str, kind: str, resource: str, name: str, cid=0, mid=0):
        if user.internal:
            return
        if resource == "exchange" and name == "":
            name = "amq.default"    # the default exchange's name to permissions (RabbitMQ's)
        if user.grants is not None:
            allowed = user.grants.resource(vhost, name, kind)
        else:
            perm = self.permissions.get((vhost, user.name))
            allowed = perm is not None and perm.allows(kind, name)
        if not allowed:
            raise errors.AccessRefused(f"access to {resource} '{name}' in vhost "
                                       f"'{vhost}' refused for user '{user.name}'", cid, mid)

    def check_topic(self, user: User, vhost: str, kind: str, exchange, routing_key: str,
                    cid=0, mid=0):
        """``kind`` ("write": publish, "read": bind) of ``routing_key`` on ``exchange`` (an
        ``Exchange``): checked for topic exchanges only, as RabbitMQ checks them."""
        if exchange.type != "topic" or user.internal:
            return
        if user.grants is not None:     # a token's topic scopes (oauth2.py)
            refused = not user.grants.topic(vhost, exchange.name, routing_key, kind)
        elif not self.topic_permissions:
            return
        else:
            perm = self.topic_permissions.get((vhost, user.name, exchange.name))
            refused = perm is not None and not perm.allows(kind, routing_key, user.name, vhost)
        if refused:
            raise errors.AccessRefused(f"access to topic '{routing_key}' in exchange "
                                       f"'{exchange.name}' in vhost '{vhost}' refused for user "
                                       f"'{user.name}'", cid, mid)
