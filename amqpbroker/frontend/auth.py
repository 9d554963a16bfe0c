"""Users, password hashes and per-vhost permissions, checked as RabbitMQ checks them.

Passwords are stored as RabbitMQ's ``rabbit_password_hashing_sha256`` hashes
(base64 of a 4-byte salt followed by SHA-256(salt + password)), so definitions exported from
RabbitMQ import unchanged. Permissions are three regexes per (vhost, user): configure (declare,
delete), write (publish, bind to a queue), read (consume, get, bind from an exchange).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field

from .. import errors

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


@dataclass
class User:
    name: str
    password_hash: str
    tags: list = field(default_factory=list)

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags


@dataclass
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, kind: str, name: str) -> bool:
        pattern = getattr(self, kind)
        if pattern == "":
            return False
        try:
            return re.match(pattern, name) is not None
        except (re.error, TypeError):       # a pattern stored before the API checked them
            return False


class Users:
    def __init__(self):
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}

    def add_user(self, name: str, password: str | None = None, *, password_hash: str | None = None,
                 tags=()) -> User:
        if password_hash is None:
            password_hash = hash_password(password) if password else ""
        user = User(name, password_hash, list(tags))
        self.users[name] = user
        return user

    def delete_user(self, name: str) -> bool:
        if self.users.pop(name, None) is None:
            return False
        for key in [k for k in self.permissions if k[1] == name]:
            del self.permissions[key]
        return True

    def set_permissions(self, vhost: str, user: str, configure=".*", write=".*", read=".*"):
        self.permissions[(vhost, user)] = Permission(configure, write, read)

    def authenticate(self, mechanism: str, response: bytes) -> User:
        """Check a SASL response; raise ConnectionAccessRefused (403) as RabbitMQ words it."""
        username = password = None
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) == 3:
                username, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
        elif mechanism == "AMQPLAIN":
            from pamqp import decode
            try:
                _, table = decode.field_table(len(response).to_bytes(4, "big") + response)
                username, password = table.get("LOGIN"), table.get("PASSWORD")
                if isinstance(username, bytes):
                    username = username.decode()
                if isinstance(password, bytes):
                    password = password.decode()
            except Exception:
                username = None
            if not isinstance(username, str) or not isinstance(password, str):
                username = password = None          # a table, a number...: no login
        else:
            raise errors.ConnectionAccessRefused(f"unsupported authentication mechanism "
                                                 f"'{mechanism}'", 10, 11)
        user = self.users.get(username) if username is not None else None
        if user is None or password is None or not check_password(password, user.password_hash):
            err = errors.ConnectionAccessRefused(
                f"Login was refused using authentication mechanism {mechanism}. For details "
                f"see the broker logfile.", 10, 11)
            err.login_failed = True       # answered with connection.close, if the client asks
            raise err
        return user

    def can_access_vhost(self, user: User, vhost: str) -> bool:
        return (vhost, user.name) in self.permissions

    def check(self, user: User, vhost: str, kind: str, resource: str, name: str, cid=0, mid=0):
        perm = self.permissions.get((vhost, user.name))
        if perm is None or not perm.allows(kind, name):
            shown = "amq.default" if resource == "exchange" and name == "" else name
            raise errors.AccessRefused(f"access to {resource} '{shown}' in vhost "
                                       f"'{vhost}' refused for user '{user.name}'", cid, mid)
