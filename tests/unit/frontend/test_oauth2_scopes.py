"""OAuth 2 scopes and RabbitMQ's wildcard patterns (frontend/oauth2.py), as
rabbit_oauth2_scope and wildcard.erl read them; tokens over sockets are in
tests/integration/test_oauth2.py."""
from __future__ import annotations

import time

import pytest

from amqpbroker.frontend.oauth2 import Grants, Scope, parse_scopes, wildcard


def test_wildcards_match_as_rabbitmq_scans_them():
    assert wildcard("orders", "orders") and not wildcard("orders2", "orders")
    assert wildcard("anything", "*") and wildcard("", "*")
    assert wildcard("orders.eu", "orders.*") and not wildcard("my-orders.eu", "orders.*")
    assert wildcard("my-orders", "*orders") and wildcard("a-b-c", "a*c")
    assert wildcard("a-b-c", "a**c")                        # duplicate wildcards
    # each part at its first place after the last: RabbitMQ's scan, not a regex's search
    assert not wildcard("abcbc", "a*bc")
    assert wildcard("a b", "a+b") and wildcard("a/b", "a%2Fb")     # URL-decoded parts


def test_scopes_become_permissions_and_tags():
    perms, tags = parse_scopes(["read:*/*", "write:v1/q.*", "write:v1/amq.topic/k.*",
                                "configure:bad", "tag:management", "tag:administrator",
                                "tag:management", "unknown:*/*"])
    assert perms == [Scope("read", "*", "*"), Scope("write", "v1", "q.*"),
                     Scope("write", "v1", "amq.topic", "k.*")]
    assert tags == ["administrator", "management"]


def test_grants_answer_vhost_resource_and_topic_checks():
    perms, _ = parse_scopes(["read:v1/*", "write:v1/amq.topic/k.*"])
    g = Grants(perms, time.time() + 60)
    assert g.vhost("v1") and not g.vhost("v2")
    assert g.resource("v1", "q", "read") and not g.resource("v1", "q", "write")
    assert g.topic("v1", "amq.topic", "k.1", "write")
    assert not g.topic("v1", "amq.topic", "x.1", "write")
    assert not g.topic("v1", "amq.topic", "k.1", "read")     # read:v1/* has no key part
    expired = Grants(perms, time.time() - 1)
    assert not expired.vhost("v1") and not expired.resource("v1", "q", "read")


def test_a_token_s_scopes_come_from_scope_another_claim_and_keycloak(tmp_path):
    """OAuth2.login without a broker: an HS256 key from a JWK file; scopes from ``scope``,
    the additional claim and Keycloak's ``authorization`` claim, with the prefix kept to
    this resource server."""
    import base64
    import json

    import jwt

    from amqpbroker.frontend.oauth2 import OAuth2, TokenRefused
    secret = b"thirty-two bytes of shared secret"
    (tmp_path / "k.json").write_text(json.dumps({
        "kty": "oct", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}))
    backend = OAuth2("rabbitmq", {"k": str(tmp_path / "k.json")}, "k",
                     additional_scopes_key="roles")
    token = jwt.encode({
        "sub": "alice", "aud": ["rabbitmq", "other"], "exp": int(time.time() + 60),
        "scope": "rabbitmq.read:*/* other.write:*/*",
        "roles": {"rabbitmq": "tag:monitoring write:v/q"},
        "authorization": {"permissions": [{"scopes": ["rabbitmq.configure:v/*"]},
                                          {"scopes": "rabbitmq.tag:management"}]},
    }, secret, algorithm="HS256")
    name, tags, grants = backend.login(token, "ignored")
    assert name == "alice" and tags == ["management", "monitoring"]
    assert sorted((s.permission, s.vhost, s.name) for s in grants.scopes) == [
        ("configure", "v", "*"), ("read", "*", "*"), ("write", "v", "q")]
    with pytest.raises(TokenRefused, match="resource_id_not_found_in_aud"):
        backend.login(jwt.encode({"sub": "x", "aud": "other"}, secret, algorithm="HS256"), "")
