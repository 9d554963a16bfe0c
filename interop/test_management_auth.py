"""Who may use the management API, and what each user tag sees, as RabbitMQ decides it
(``rabbit_web_dispatch_access_control.erl``): no management tag, no access; ``management`` and
``policymaker`` see the vhosts they have permissions in; ``monitoring`` also the node, every
vhost's name and every connection; only ``administrator`` sees users, their password hashes,
permissions and definitions."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing.mgmt_client import ManagementClient, q

from .conftest import url_with, wait_until

PASSWORD = "pw-s3cret"


def not_authorised(reason: str):
    return {"error": "not_authorised", "reason": reason}


@pytest.fixture
def http(mgmt_url):
    return ManagementClient(mgmt_url)


@pytest.fixture
def site(mgmt, uniq, broker_url):
    """Two vhosts (the users' ``va``, and ``vb``), a queue in each and an exchange in ``vb``,
    and one user per tag (``none`` has no tag) with permissions on ``va`` only."""
    class Site:
        pass

    s = Site()
    s.va, s.vb = uniq("va"), uniq("vb")
    s.qa, s.qb, s.xb = uniq("qa"), uniq("qb"), uniq("xb")
    for vhost in (s.va, s.vb):
        assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) == 201   # guest gets full permissions
    s.users = {}
    for tag in ("none", "management", "policymaker", "monitoring", "administrator"):
        name = uniq(tag)
        assert mgmt.put(f"/api/users/{q(name)}", {"password": PASSWORD,
                                                  "tags": "" if tag == "none" else tag}) == 201
        assert mgmt.put(f"/api/permissions/{q(s.va)}/{q(name)}",
                        {"configure": ".*", "write": ".*", "read": ".*"}) == 201
        s.users[tag] = name
    for vhost, declare in ((s.va, lambda ch: ch.queue_declare(s.qa, durable=True)),
                           (s.vb, lambda ch: (ch.queue_declare(s.qb, durable=True),
                                              ch.exchange_declare(s.xb, "direct", durable=True)))):
        conn = pika.BlockingConnection(pika.URLParameters(url_with(broker_url, vhost=vhost)))
        declare(conn.channel())
        conn.close()
    yield s
    for vhost in (s.va, s.vb):
        mgmt.delete(f"/api/vhosts/{q(vhost)}")
    for name in s.users.values():
        mgmt.delete(f"/api/users/{q(name)}")


ADMIN_ONLY = ["/api/users", "/api/users/{user}", "/api/permissions",
              "/api/permissions/{va}/{user}", "/api/definitions", "/api/vhosts/{va}",
              "/api/topic-permissions", "/api/topic-permissions/{va}/{user}",
              "/api/users/{user}/permissions", "/api/users/{user}/topic-permissions",
              "/api/vhosts/{va}/permissions", "/api/vhosts/{va}/topic-permissions"]


def paths(site, templates):
    return [t.format(va=q(site.va), vb=q(site.vb), user=q(site.users["management"]))
            for t in templates]


@pytest.mark.parametrize("tags", ["", "impersonator"])
def test_user_without_a_management_tag_gets_401_everywhere(http, mgmt, uniq, tags):
    name = uniq("u")
    assert mgmt.put(f"/api/users/{q(name)}", {"password": PASSWORD, "tags": tags}) == 201
    try:
        for path in ("/api/overview", "/api/whoami", "/api/users", "/api/definitions",
                     "/api/queues", "/api/connections"):
            answer = http.get(path, name, PASSWORD)
            assert answer == (401, not_authorised("Not management user")), path
    finally:
        mgmt.delete(f"/api/users/{q(name)}")


@pytest.mark.parametrize("tag", ["management", "policymaker"])
def test_management_user_sees_only_its_own_vhosts(http, site, tag):
    user = site.users[tag]
    assert http.get("/api/whoami", user, PASSWORD) == (200, {"name": user, "tags": [tag]})
    status, vhosts = http.get("/api/vhosts", user, PASSWORD)
    assert status == 200 and [v["name"] for v in vhosts] == [site.va]
    for kind in ("queues", "exchanges"):
        status, items = http.get(f"/api/{kind}", user, PASSWORD)
        assert status == 200 and {i["vhost"] for i in items} == {site.va}, kind
    status, queues = http.get(f"/api/queues/{q(site.va)}", user, PASSWORD)
    assert status == 200 and [x["name"] for x in queues] == [site.qa]
    assert http.get(f"/api/queues/{q(site.va)}/{q(site.qa)}", user, PASSWORD)[0] == 200
    vhost_refused = (401, not_authorised("User not authorised to access virtual host"))
    for path in (f"/api/queues/{q(site.vb)}", f"/api/queues/{q(site.vb)}/{q(site.qb)}",
                 f"/api/exchanges/{q(site.vb)}", f"/api/exchanges/{q(site.vb)}/{q(site.xb)}"):
        assert http.get(path, user, PASSWORD) == vhost_refused, path
    for path in paths(site, ADMIN_ONLY):
        answer = http.get(path, user, PASSWORD)
        assert answer == (401, not_authorised("Not administrator user")), path
    assert http.get("/api/nodes", user, PASSWORD) == (401, not_authorised("Not monitor user"))
    status, overview = http.get("/api/overview", user, PASSWORD)
    assert status == 200 and "node" not in overview


def test_monitoring_user_sees_the_node_and_every_vhost_name(http, site):
    user = site.users["monitoring"]
    status, nodes = http.get("/api/nodes", user, PASSWORD)
    assert status == 200 and len(nodes) == 1
    status, vhosts = http.get("/api/vhosts", user, PASSWORD)
    assert status == 200 and {site.va, site.vb, "/"} <= {v["name"] for v in vhosts}
    status, overview = http.get("/api/overview", user, PASSWORD)
    assert status == 200 and "node" in overview
    # but objects only in the vhosts it may log in to, as RabbitMQ's filter_vhost
    status, queues = http.get("/api/queues", user, PASSWORD)
    assert status == 200 and {x["vhost"] for x in queues} == {site.va}
    assert http.get(f"/api/queues/{q(site.vb)}", user, PASSWORD) == (
        401, not_authorised("User not authorised to access virtual host"))
    for path in paths(site, ADMIN_ONLY):
        answer = http.get(path, user, PASSWORD)
        assert answer == (401, not_authorised("Not administrator user")), path


def test_administrator_sees_everything_and_is_the_only_one_to_see_hashes(http, site):
    user = site.users["administrator"]           # permissions on va only, like the others
    status, queues = http.get("/api/queues", user, PASSWORD)
    assert status == 200 and {site.qa, site.qb} <= {x["name"] for x in queues}
    assert http.get(f"/api/exchanges/{q(site.vb)}/{q(site.xb)}", user, PASSWORD)[0] == 200
    assert http.get(f"/api/vhosts/{q(site.vb)}", user, PASSWORD)[0] == 200
    status, users = http.get("/api/users", user, PASSWORD)
    assert status == 200
    hashes = {u["name"]: u["password_hash"] for u in users}
    assert all(hashes[name] for name in site.users.values())
    status, defs = http.get("/api/definitions", user, PASSWORD)
    assert status == 200 and {u["name"] for u in defs["users"]} >= set(site.users.values())
    for tag in ("none", "management", "policymaker", "monitoring"):
        for path in ("/api/users", f"/api/users/{q(site.users[tag])}", "/api/definitions"):
            status, body = http.get(path, site.users[tag], PASSWORD)
            assert status == 401 and "password_hash" not in str(body), (tag, path)


def test_connections_are_shown_to_their_user_and_to_monitors(http, site, connect, broker_url):
    mine, other = site.users["management"], site.users["administrator"]
    conns = [connect(url_with(broker_url, user=name, password=PASSWORD, vhost=site.va))
             for name in (mine, other)]

    def users_seen_by(tag):
        status, conns = http.get("/api/connections", site.users[tag], PASSWORD)
        assert status == 200
        return {c["user"] for c in conns}

    # RabbitMQ lists a connection once its stats are emitted (every 5 s)
    wait_until(lambda: {mine, other} <= users_seen_by("administrator"), timeout=20)
    assert {mine, other} <= users_seen_by("monitoring")
    assert users_seen_by("management") == {mine}
    assert users_seen_by("policymaker") == set()
    for c in conns:
        c.close()


def test_failed_login_is_challenged(http, site):
    status, body, headers = http.request("GET", "/api/overview", site.users["administrator"],
                                         "wrong")
    assert (status, body) == (401, {"error": "not_authorized", "reason": "Login failed"})
    assert headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    status, _, headers = http.request("GET", "/api/overview", None)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'


def test_guest_logs_in_from_loopback(http, mgmt_url):
    # the refusal from any other address: tests/integration/test_loopback_users.py
    assert "127.0.0.1" in mgmt_url or "localhost" in mgmt_url
    assert http.get("/api/whoami", "guest", "guest") == (200, {"name": "guest",
                                                                "tags": ["administrator"]})


def test_auth_attempts_count_logins_by_protocol_since_a_reset(http, broker_url, site):
    """RabbitMQ's auth_attempt_metrics: after a reset, one wrong and one right AMQP login,
    one management request with a wrong password and one right (the reading itself)."""
    node = http.request("GET", "/api/overview", "guest", "guest")[1]["node"]
    path = f"/api/auth/attempts/{q(node)}"
    assert http.request("DELETE", path, "guest", "guest")[0] == 204
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(url_with(broker_url, password="wrong")))
    pika.BlockingConnection(pika.URLParameters(broker_url)).close()
    assert http.request("GET", "/api/overview", "guest", "wrong")[0] == 401
    status, counts, _ = http.request("GET", path, "guest", "guest")
    assert status == 200
    assert {c["protocol"]: (c["auth_attempts"], c["auth_attempts_failed"],
                            c["auth_attempts_succeeded"]) for c in counts} == {
        "http": (2, 1, 1), "amqp091": (2, 1, 1)}
    assert http.request("GET", path + "/source", "guest", "guest")[:2] == (200, [])
    assert http.request("GET", "/api/auth/attempts/no-such-node@x", "guest", "guest")[0] \
        == 404
    user = site.users["management"]
    assert http.request("GET", path, user, PASSWORD)[:2] == (
        401, not_authorised("Not monitor user"))
