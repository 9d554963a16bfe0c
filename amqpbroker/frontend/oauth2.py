"""RabbitMQ's OAuth 2 backend (``rabbitmq_auth_backend_oauth2``, 3.10): a client logs in
with a JWT as its password, and the token's scopes are its permissions.

* **The token** is verified with PyJWT: its header's ``kid`` names one of the signing keys
  (``--oauth2-signing-keys KID=FILE,...``, PEM public keys, RSA or EC, or JWK files, a
  symmetric ``oct`` one for HS256 too, or those of the
  identity provider's JWKS, ``--oauth2-jwks-url``, read at start and again, off the event
  loop, when a token names a key it did not have), or ``--oauth2-default-key`` when it
  names none; RS256/384/512, PS*, ES*, and HS* with a symmetric key only. Its ``aud`` must hold the resource server id
  (``--oauth2-resource-server-id``, ``rabbitmq``); an ``exp`` in the past refuses it.
* **The user** is the token's ``client_id``, else its ``sub``, else the user name the client
  sent; it need not exist among the broker's users.
* **Scopes** (``scope``, a list or a space-separated string, the claim
  ``--oauth2-additional-scopes-key`` names, and Keycloak's ``authorization.permissions[]
  .scopes``) that start with
  ``<resource server id>.`` are the user's, the prefix removed: ``configure:VHOST/NAME``,
  ``write:VHOST/NAME``, ``read:VHOST/NAME`` grant that permission on the resources whose
  vhost and name match the patterns, ``write:VHOST/EXCHANGE/ROUTING_KEY`` and
  ``read:VHOST/EXCHANGE/ROUTING_KEY`` the topic permission of a topic exchange (without one,
  a topic exchange refuses the user, as RabbitMQ's backend does), ``tag:NAME`` a user tag
  (``tag:administrator``, ``tag:management``, ...). A vhost may be opened when a permission
  scope names it. Patterns are RabbitMQ's wildcards (``wildcard.erl``): ``*`` any run of
  characters, the rest literal (URL-encoded), matched as RabbitMQ scans them.
* Every check looks at the expiry again: a connection whose token expired is refused what it
  asks next, as RabbitMQ's ``with_decoded_token``.

``--auth-backends`` orders the backends (``internal``, ``oauth2``), as RabbitMQ's
``auth_backends``: a login goes to each until one accepts it. PyJWT and cryptography are
imported where the backend uses them, so a broker without it does not load them in each of
its processes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

log = logging.getLogger("amqpbroker.auth")

PERMISSIONS = ("configure", "write", "read")


class TokenRefused(Exception):
    """Why a token does not log in (for the log; the client hears only "refused")."""


class UnknownKey(TokenRefused):
    """A token signed by a key the JWKS did not have when last read: read it again
    (``refresh``, off the event loop), then try the login once more."""


@dataclass(frozen=True)
class Scope:
    """A permission scope: ``permission`` on vhost / name (/ routing key) patterns."""
    permission: str
    vhost: str
    name: str
    routing_key: str | None = None


@dataclass
class Grants:
    """What a token grants, kept on its connection's user."""
    scopes: list = field(default_factory=list)      # of Scope
    expires: float | None = None                    # the token's exp, seconds

    def expired(self) -> bool:
        return self.expires is not None and self.expires <= time.time()

    def vhost(self, vhost: str) -> bool:
        return not self.expired() and any(wildcard(vhost, s.vhost) for s in self.scopes)

    def resource(self, vhost: str, name: str, permission: str) -> bool:
        return not self.expired() and any(
            s.permission == permission and wildcard(vhost, s.vhost) and wildcard(name, s.name)
            for s in self.scopes)

    def topic(self, vhost: str, exchange: str, routing_key: str, permission: str) -> bool:
        return not self.expired() and any(
            s.routing_key is not None and s.permission == permission
            and wildcard(vhost, s.vhost) and wildcard(exchange, s.name)
            and wildcard(routing_key, s.routing_key) for s in self.scopes)


def wildcard(subject: str, pattern: str) -> bool:
    """RabbitMQ's ``wildcard:match``: the pattern's parts between ``*`` (URL-decoded) found
    in order, the first at the start, each at its first place after the last, and the
    subject ending with the last unless the pattern ends with ``*``."""
    parts = [unquote_plus(p) for p in pattern.split("*")]
    first, rest = parts[0], parts[1:]
    if not subject.startswith(first):
        return False
    pos = len(first)
    for i, part in enumerate(rest):
        if part == "":
            if i == len(rest) - 1:
                return True             # ends with a wildcard
            continue
        found = subject.find(part, pos)
        if found == -1:
            return False
        pos = found + len(part)
    return pos == len(subject)


def parse_scopes(scopes) -> tuple[list, list]:
    """(permission scopes, tags) of a token's scopes, already without their prefix."""
    out, tags = [], []
    for scope in scopes:
        if scope.startswith("tag:"):
            tags.append(scope[4:])
            continue
        permission, colon, pattern = scope.partition(":")
        if not colon or permission not in PERMISSIONS:
            continue
        parts = pattern.split("/")
        if len(parts) == 2:
            out.append(Scope(permission, parts[0], parts[1]))
        elif len(parts) == 3:
            out.append(Scope(permission, parts[0], parts[1], parts[2]))
    return out, sorted(set(tags))


class OAuth2:
    """The backend's settings (keys read once, in each process that checks logins)."""

    def __init__(self, resource_server_id: str, signing_keys: dict, default_key: str | None,
                 jwks_url: str = "", additional_scopes_key: str = ""):
        self.resource_server_id = resource_server_id
        self.keys = {kid: _read_key(path) for kid, path in signing_keys.items()}
        self.default_key = default_key
        self.additional_scopes_key = additional_scopes_key
        self.jwks_url = jwks_url
        self.jwks_keys: dict = {}           # kid -> key, as the JWKS last said
        # when an unknown key last had the JWKS read again: a flood of tokens naming keys
        # that do not exist reads it at most once per JWKS_MIN_INTERVAL
        self.jwks_read_at = float("-inf")
        if jwks_url:
            self.refresh(asked=False)

    def refresh(self, asked: bool = True) -> None:
        """Read the identity provider's JWKS (``--oauth2-jwks-url``, RabbitMQ's
        ``auth_oauth2.jwks_url``): blocking, so off the event loop once the broker runs
        (``Session``, the management API). ``asked``: by a token naming an unknown key. A
        failed read is logged and keeps what was read before."""
        import json
        import urllib.request

        import jwt
        if asked:
            self.jwks_read_at = time.monotonic()
        try:
            with urllib.request.urlopen(self.jwks_url, timeout=JWKS_TIMEOUT) as r:
                keys = jwt.PyJWKSet.from_dict(json.loads(r.read())).keys
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            log.warning("OAuth 2: the JWKS at %s was not read: %s", self.jwks_url, exc)
            return
        self.jwks_keys = {k.key_id: k.key for k in keys if k.key_id}
        log.info("OAuth 2: %d signing key(s) read from %s", len(self.jwks_keys),
                 self.jwks_url)

    def _key(self, kid: str | None):
        key = self.keys.get(kid)
        if key is None:
            key = self.jwks_keys.get(kid)
        if key is None and self.jwks_url \
                and time.monotonic() - self.jwks_read_at > JWKS_MIN_INTERVAL:
            raise UnknownKey(f"no signing key '{kid}'")
        if key is None:
            raise TokenRefused(f"no signing key '{kid}'")
        return key

    @classmethod
    def from_config(cls, cfg) -> "OAuth2 | None":
        """The backend, when ``--auth-backends`` names it; a bad setting is a ValueError (or
        an OSError: a key file that cannot be read), which stops the start in one line."""
        if "oauth2" not in backends(cfg):
            return None
        bad = [item for item in cfg.oauth2_signing_keys if "=" not in item]
        if bad or not (cfg.oauth2_signing_keys or cfg.oauth2_jwks_url):
            raise ValueError("--auth-backends oauth2 needs --oauth2-signing-keys KID=PEM-file"
                             f"[,...] or --oauth2-jwks-url"
                             f"{f' (not a KID=file pair: {bad[0]})' if bad else ''}")
        keys = dict(item.split("=", 1) for item in cfg.oauth2_signing_keys)
        if cfg.oauth2_default_key and cfg.oauth2_default_key not in keys \
                and not cfg.oauth2_jwks_url:
            raise ValueError(f"--oauth2-default-key {cfg.oauth2_default_key} names none of "
                             f"the signing keys")
        try:
            return cls(cfg.oauth2_resource_server_id, keys, cfg.oauth2_default_key or None,
                       cfg.oauth2_jwks_url, cfg.oauth2_additional_scopes_key)
        except (TypeError, ValueError) as exc:      # neither a PEM public key nor a JWK
            raise ValueError(f"an OAuth 2 signing key is not a PEM public key or a JWK: "
                             f"{exc}") from None

    def login(self, token: str, username: str | None):
        """(user name, tags, Grants) of a valid token, or ``TokenRefused``."""
        import jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("provided token is invalid") from None
        key = self._key(header.get("kid") or self.default_key)
        try:
            claims = jwt.decode(token, key, algorithms=ALGORITHMS + SYMMETRIC
                                if _symmetric(key) else ALGORITHMS,
                                options={"verify_aud": False, "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"provided token is invalid: {exc}") from None
        aud = _words(claims.get("aud"))
        if self.resource_server_id and self.resource_server_id not in aud:
            raise TokenRefused(f"{{invalid_aud,{{resource_id_not_found_in_aud,"
                               f"{self.resource_server_id},{aud}}}}}")
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp <= time.time():
            raise TokenRefused(f"Provided JWT token has expired at timestamp {exp}")
        prefix = f"{self.resource_server_id}." if self.resource_server_id else ""
        found = self._additional_scopes(claims) + _keycloak_scopes(claims) \
            + _words(claims.get("scope"))
        scopes = [s[len(prefix):] for s in found if s.startswith(prefix)]
        permissions, tags = parse_scopes(scopes)
        name = claims.get("client_id") or claims.get("sub") or username
        if not name:
            raise TokenRefused("the token names no user (client_id, sub) and none was given")
        return str(name), tags, Grants(permissions, exp if isinstance(exp, (int, float))
                                       else None)

    def _additional_scopes(self, claims: dict) -> list:
        """RabbitMQ's ``additional_scopes_key`` (``--oauth2-additional-scopes-key``): scopes
        from another claim (Keycloak's or Azure's roles, ...): a list or a space-separated
        string taken as they are, or an object whose entry for the resource server id lists
        scopes without the prefix."""
        if not self.additional_scopes_key:
            return []
        value = claims.get(self.additional_scopes_key)
        if isinstance(value, dict):
            mine = value.get(self.resource_server_id)
            return [f"{self.resource_server_id}.{k}" for k in _words(mine)]
        return _words(value)


JWKS_TIMEOUT = 10.0          # seconds a read of the JWKS may take
JWKS_MIN_INTERVAL = 5.0      # seconds between two reads asked by unknown keys


def _keycloak_scopes(claims: dict) -> list:
    """The scopes of Keycloak's ``authorization`` claim (its ``permissions``, each with
    ``scopes``), as RabbitMQ reads them."""
    authorization = claims.get("authorization")
    permissions = authorization.get("permissions") if isinstance(authorization, dict) else None
    out = []
    for p in permissions if isinstance(permissions, list) else ():
        scopes = p.get("scopes") if isinstance(p, dict) else None
        out += [scopes] if isinstance(scopes, str) else _words(scopes)
    return out


def _read_key(path: str):
    """A signing key file: a PEM public key (RSA, EC), or a JWK (JSON: RSA, EC, or a
    symmetric ``oct`` key for HS256/384/512, as RabbitMQ's signing keys may be)."""
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip().startswith(b"{"):
        try:
            return jwt.PyJWK.from_json(data.decode()).key
        except jwt.PyJWTError as exc:
            raise ValueError(f"{path}: not a JWK: {exc}") from None
    return load_pem_public_key(data)


def _symmetric(key) -> bool:
    return isinstance(key, bytes)


SYMMETRIC = ["HS256", "HS384", "HS512"]     # only for a symmetric key: never a public one
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512"]


def _words(value) -> list:
    if isinstance(value, str):
        return value.split()
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def backends(cfg) -> tuple:
    """``--auth-backends`` in order (ValueError for a name that is none of ours)."""
    names = tuple(b.strip() for b in cfg.auth_backends.split(",") if b.strip())
    unknown = [n for n in names if n not in ("internal", "oauth2")]
    if unknown or not names:
        raise ValueError(f"--auth-backends takes internal and oauth2, not "
                         f"{','.join(unknown) or 'nothing'}")
    return names
