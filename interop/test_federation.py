"""Federation (RabbitMQ's ``rabbitmq_federation``, AMQP 0-9-1) between the broker under test
and a broker of ours the test starts (the *peer*), in both directions: the broker under test
federates an exchange and a queue from the peer (so the peer is the upstream a RabbitMQ
link talks to), and the peer federates an exchange and a queue from the broker under test
(our links against a RabbitMQ upstream).

Every test here passes against RabbitMQ 3.10.8 with ``rabbitmq_federation`` and
``rabbitmq_federation_management`` enabled (``AMQP_URL``/``AMQP_MGMT_URL``) and ours. A link
works on its own time: the tests wait for what the management APIs show (a link running, a
binding upstream) before they publish. Ours only (restarts, cycles, checks):
tests/integration/test_federation.py.
"""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import BrokerProcess

from .conftest import Mgmt, q, url_with, wait_until

WITHIN = 20.0       # seconds a link may take to start, bind or move a few messages
LINK_KEYS = {"node", "exchange", "upstream_exchange", "type", "vhost", "upstream", "id",
             "status", "local_connection", "uri", "timestamp"}


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("federation-peer"), management=True) as b:
        assert b.request("PUT", "global-parameters/cluster_name",
                         {"name": "cluster_name", "value": "interop-peer"})[0] in (201, 204)
        yield b


@pytest.fixture
def federated(mgmt, peer, uniq):
    """``setup(kind)``: the broker under test federates ``kind`` (exchanges or queues) named
    by the returned name from the peer: an upstream and a policy, removed at teardown."""
    made = []

    def setup(kind: str) -> str:
        name = uniq("fed")
        upstream = {"uri": f"amqp://guest:guest@127.0.0.1:{peer.port}"}
        assert mgmt.put(f"/api/parameters/federation-upstream/%2F/{name}",
                        {"value": upstream}) in (201, 204)
        assert mgmt.put(f"/api/policies/%2F/{name}", {
            "pattern": f"^{name}$", "apply-to": kind,
            "definition": {"federation-upstream": name}}) in (201, 204)
        made.append(name)
        return name
    yield setup
    for name in made:
        mgmt.delete(f"/api/policies/%2F/{q(name)}")
        mgmt.delete(f"/api/parameters/federation-upstream/%2F/{q(name)}")


def running_link(mgmt: Mgmt, name: str) -> dict:
    def found():
        return next((x for x in mgmt.get("/api/federation-links/%2F")
                     if name in (x.get("exchange"), x.get("queue"))
                     and x["status"] == "running"), None)
    return wait_until(found, WITHIN, message=f"the link of {name} running")


def bindings_from(api, exchange: str) -> list[dict]:
    return [b for b in api("/api/bindings/%2F")
            if b["source"] == exchange and b["destination"].startswith("federation: ")]


def peer_api(peer: BrokerProcess):
    return lambda path: peer.request("GET", path.removeprefix("/api/"))[1]


def test_an_exchange_federated_from_our_broker(mgmt, connect, peer, federated):
    name = federated("exchanges")
    cluster = mgmt.get("/api/cluster-name")["name"]
    ch = connect().channel()
    ch.exchange_declare(name, "direct")
    ch.queue_declare(name, exclusive=True)
    ch.queue_bind(name, name, "k")
    link = running_link(mgmt, name)
    assert LINK_KEYS <= set(link)
    assert (link["exchange"], link["upstream_exchange"], link["type"], link["upstream"],
            link["uri"]) == (name, name, "exchange", name, f"amqp://127.0.0.1:{peer.port}")
    # on the peer: the link's queue, its internal exchange, the binding with x-bound-from
    [bound] = wait_until(lambda: bindings_from(peer_api(peer), name), WITHIN,
                         message="the binding on the upstream")
    assert bound["routing_key"] == "k"
    assert bound["arguments"] == {"x-bound-from": [{
        "cluster-name": cluster, "vhost": "/", "exchange": bound["arguments"][
            "x-bound-from"][0]["exchange"], "hops": 1}]}
    internal = peer.request("GET", f"exchanges/%2F/{q(bound['destination'])}")[1]
    assert (internal["type"], internal["internal"], internal["durable"]) == \
        ("x-federation-upstream", True, True)
    assert internal["arguments"] == {"x-max-hops": 1, "x-downstream-name": cluster,
                                     "x-downstream-vhost": "/",
                                     "x-internal-purpose": "federation"}
    upstream_queue = peer.request("GET", f"queues/%2F/{q(f'federation: {name} -> {cluster}')}")
    assert upstream_queue[0] == 200
    assert upstream_queue[1]["arguments"] == {"x-internal-purpose": "federation"}

    pch = pika.BlockingConnection(pika.URLParameters(peer.url)).channel()
    for body in (b"one", b"two"):
        pch.basic_publish(name, "k", body)
    pch.basic_publish(name, "other", b"not bound downstream")
    pch.basic_publish(name, "k", b"last")
    got = []
    wait_until(lambda: (m := ch.basic_get(name, auto_ack=True))[0] is not None
               and got.append(m) is None and len(got) == 3, WITHIN, message="3 arrived")
    assert [body for _, _, body in got] == [b"one", b"two", b"last"]
    method, props, _ = got[0]
    assert (method.exchange, method.routing_key) == (name, "k")
    assert props.headers == {"x-received-from": [{
        "uri": f"amqp://127.0.0.1:{peer.port}", "exchange": name, "redelivered": False,
        "cluster-name": "interop-peer", "vhost": "/"}]}
    pch.connection.close()
    # the policy goes: the link goes, and deletes its queue upstream
    mgmt.delete(f"/api/policies/%2F/{q(name)}")
    wait_until(lambda: peer.request("GET", f"queues/%2F/{q(f'federation: {name} -> {cluster}')}")
               [0] == 404, WITHIN, message="the upstream queue deleted")


def test_a_queue_federated_from_our_broker(mgmt, connect, peer, federated):
    name = federated("queues")
    pch = pika.BlockingConnection(pika.URLParameters(peer.url)).channel()
    pch.queue_declare(name, auto_delete=True)
    for i in range(5):
        pch.basic_publish("", name, f"job{i}".encode())
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    link = running_link(mgmt, name)
    assert (link["type"], link["queue"], link["upstream_queue"], link["consumer_tag"]) == \
        ("queue", name, name, f"federation-link-{name}")
    got = []
    ch.basic_consume(name, lambda c, m, p, body: (got.append((body, p.headers)),
                                                   c.basic_ack(m.delivery_tag)))
    wait_until(lambda: conn.process_data_events(0.05) or len(got) == 5, WITHIN,
               message="5 fetched")
    assert [body for body, _ in got] == [f"job{i}".encode() for i in range(5)]
    assert got[0][1] == {
        "x-original-exchange": "", "x-original-routing-key": name,
        "x-received-from": [{"uri": f"amqp://127.0.0.1:{peer.port}", "queue": name,
                             "redelivered": False, "visit-count": 1}]}
    pch.connection.close()


def test_our_broker_federates_an_exchange_from_the_broker_under_test(
        mgmt, broker_url, connect, peer, uniq):
    name = uniq("fedup")
    cluster = mgmt.get("/api/cluster-name")["name"]
    assert peer.request("PUT", f"parameters/federation-upstream/%2F/{name}",
                        {"value": {"uri": url_with(broker_url, vhost="/")}})[0] == 201
    assert peer.request("PUT", f"policies/%2F/{name}", {
        "pattern": f"^{name}$", "apply-to": "exchanges",
        "definition": {"federation-upstream": name}})[0] == 201
    try:
        pch = pika.BlockingConnection(pika.URLParameters(peer.url)).channel()
        pch.exchange_declare(name, "topic")
        pch.queue_declare(name, exclusive=True)
        pch.queue_bind(name, name, "a.#")
        try:
            [bound] = wait_until(lambda: bindings_from(mgmt.get, name), WITHIN,
                                 message="the binding on the broker under test")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {peer.request('GET', 'federation-links')[1]}") \
                from None
        assert (bound["routing_key"], bound["destination"]) == \
            ("a.#", f"federation: {name} -> interop-peer B")
        ch = connect().channel()
        ch.basic_publish(name, "a.b", b"hello")
        ch.basic_publish(name, "b", b"not bound there")
        ch.basic_publish(name, "a", b"bye")
        got = []
        wait_until(lambda: (m := pch.basic_get(name, auto_ack=True))[0] is not None
                   and got.append(m) is None and len(got) == 2, WITHIN, message="2 arrived")
        assert [body for _, _, body in got] == [b"hello", b"bye"]
        assert got[0][1].headers["x-received-from"][0]["cluster-name"] == cluster
        pch.connection.close()
    finally:
        peer.request("DELETE", f"policies/%2F/{name}")
        peer.request("DELETE", f"parameters/federation-upstream/%2F/{name}")
    wait_until(lambda: not bindings_from(mgmt.get, name), WITHIN,
               message="what the link declared on the broker under test deleted")


def test_our_broker_federates_a_queue_from_the_broker_under_test(
        mgmt, broker_url, connect, peer, uniq):
    name = uniq("fedq")
    ch = connect().channel()
    ch.queue_declare(name, durable=True)
    for i in range(4):
        ch.basic_publish("", name, f"from-under-test-{i}".encode())
    assert peer.request("PUT", f"parameters/federation-upstream/%2F/{name}",
                        {"value": {"uri": url_with(broker_url, vhost="/")}})[0] == 201
    assert peer.request("PUT", f"policies/%2F/{name}", {
        "pattern": f"^{name}$", "apply-to": "queues",
        "definition": {"federation-upstream": name}})[0] == 201
    try:
        conn = pika.BlockingConnection(pika.URLParameters(peer.url))
        pch = conn.channel()
        pch.queue_declare(name, exclusive=True)
        got = []
        pch.basic_consume(name, lambda c, m, p, body: (got.append(body),
                                                        c.basic_ack(m.delivery_tag)))
        wait_until(lambda: conn.process_data_events(0.05) or len(got) == 4, WITHIN,
                   message="4 fetched from the broker under test")
        assert got == [f"from-under-test-{i}".encode() for i in range(4)]
        conn.close()
    finally:
        peer.request("DELETE", f"policies/%2F/{name}")
        peer.request("DELETE", f"parameters/federation-upstream/%2F/{name}")
        ch.queue_delete(name)
