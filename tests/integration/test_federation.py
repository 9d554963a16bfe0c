"""Federation as ours runs it, between two brokers of ours on loopback (the process layout
is the run's: CI's second pass runs them split). interop/test_federation.py runs RabbitMQ on
either side. A link works on its own time: the tests wait for what the management APIs
show (a link running, a binding upstream) before they publish, as a user would.
"""
from __future__ import annotations

import socket
from urllib.parse import quote

import pika
import pytest

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.leaks import wait_until

WITHIN = 20.0       # seconds a link may take to start, bind or move a few messages


def channel_of(b: BrokerProcess):
    return pika.BlockingConnection(pika.URLParameters(b.url)).channel()


def named(b: BrokerProcess, cluster_name: str) -> BrokerProcess:
    """Brokers that federate each other need distinct cluster names (cycle detection)."""
    assert b.request("PUT", "global-parameters/cluster_name",
                     {"name": "cluster_name", "value": cluster_name})[0] in (201, 204)
    return b


def upstream_to(down: BrokerProcess, up: BrokerProcess, name: str = "origin", **more) -> None:
    value = {"uri": f"amqp://guest:guest@127.0.0.1:{up.port}", **more}
    assert down.request("PUT", f"parameters/federation-upstream/%2F/{name}",
                        {"value": value})[0] == 201


def federate(b: BrokerProcess, pattern: str, apply_to: str = "exchanges",
             name: str = "federate", **definition) -> None:
    definition = definition or {"federation-upstream-set": "all"}
    assert b.request("PUT", f"policies/%2F/{name}", {
        "pattern": pattern, "apply-to": apply_to, "definition": definition})[0] == 201


def links(b: BrokerProcess) -> list[dict]:
    return b.request("GET", "federation-links")[1]


def running(b: BrokerProcess, n: int = 1) -> list[dict]:
    wait_until(lambda: sum(x["status"] == "running" for x in links(b)) == n, WITHIN,
               f"{n} link(s) running")
    return links(b)


def upstream_bindings(up: BrokerProcess, exchange: str) -> list[tuple]:
    return sorted((x["routing_key"], x["destination"]) for x in up.request("GET", "bindings")[1]
                  if x["source"] == exchange and x["destination"].startswith("federation: "))


def drain(ch, queue: str) -> list:
    out = []
    while (got := ch.basic_get(queue, auto_ack=True))[0] is not None:
        out.append(got)
    return out


def depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def federated_exchange(up: BrokerProcess, down: BrokerProcess, exchange: str, queue: str,
                       kind: str = "fanout", key: str = "", **upstream):
    """``down`` federates durable ``exchange`` from ``up`` (an upstream and a policy), with
    durable ``queue`` bound to it by ``key``; once the binding is upstream, a channel."""
    upstream_to(down, up, **upstream)
    federate(down, f"^{exchange}$")
    ch = channel_of(down)
    ch.exchange_declare(exchange, kind, durable=True)
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, exchange, key)
    running(down)
    wait_until(lambda: upstream_bindings(up, exchange), WITHIN, "the binding upstream")
    return ch


@pytest.fixture
def pair(tmp_path):
    with BrokerProcess(tmp_path / "up", management=True) as up, \
            BrokerProcess(tmp_path / "down", management=True) as down:
        yield named(up, "up"), named(down, "down")


def test_an_exchange_is_federated_by_its_bindings(pair):
    up, down = pair
    upstream_to(down, up)
    federate(down, r"^fed\.")
    dch = channel_of(down)
    dch.exchange_declare("fed.x", "topic", durable=True)
    dch.queue_declare("fed-q")
    dch.queue_bind("fed-q", "fed.x", "a.*")
    [link] = running(down)
    assert {k: v for k, v in link.items() if k not in ("id", "timestamp")} == {
        "node": link["node"], "exchange": "fed.x", "upstream_exchange": "fed.x",
        "type": "exchange", "vhost": "/", "upstream": "origin", "status": "running",
        "local_connection": "Federation link (upstream: origin, policy: federate)",
        "uri": f"amqp://127.0.0.1:{up.port}"}
    # the binding is repeated upstream, to the link's internal exchange
    wait_until(lambda: [k for k, _ in upstream_bindings(up, "fed.x")] == ["a.*"], WITHIN,
               "the binding upstream")
    assert {q["name"] for q in up.request("GET", "queues")[1]} == {"federation: fed.x -> down"}
    uch = channel_of(up)
    for i in range(5):
        uch.basic_publish("fed.x", "a.b", f"m{i}".encode())
    uch.basic_publish("fed.x", "z.z", b"unbound downstream: stays upstream")
    uch.basic_publish("fed.x", "a.end", b"end")
    wait_until(lambda: depth(dch, "fed-q") == 6, WITHIN, "6 messages downstream")
    got = drain(dch, "fed-q")
    assert [body for _, _, body in got] == [b"m0", b"m1", b"m2", b"m3", b"m4", b"end"]
    method, props, _ = got[0]
    assert (method.exchange, method.routing_key) == ("fed.x", "a.b")
    assert props.headers == {"x-received-from": [{
        "uri": f"amqp://127.0.0.1:{up.port}", "exchange": "fed.x", "redelivered": False,
        "cluster-name": "up", "vhost": "/"}]}
    # a binding removed downstream goes upstream too; one added comes
    dch.queue_bind("fed-q", "fed.x", "b.#")
    dch.queue_unbind("fed-q", "fed.x", "a.*")
    wait_until(lambda: [k for k, _ in upstream_bindings(up, "fed.x")] == ["b.#"], WITHIN,
               "the bindings upstream follow")
    # no longer federated: the link stops and deletes what it declared upstream
    assert down.request("DELETE", "policies/%2F/federate")[0] == 204
    wait_until(lambda: links(down) == [], WITHIN, "the link gone")
    wait_until(lambda: not any(q["name"].startswith("federation: ")
                               for q in up.request("GET", "queues")[1]), WITHIN,
               "its upstream queue deleted")
    assert not any(x["name"].startswith("federation: ") for x in up.request("GET", "exchanges")[1])


def test_what_is_published_while_the_downstream_is_down_arrives_after(pair):
    """The upstream queue outlives the downstream broker's stop (and its SIGKILL): nothing
    published meanwhile is lost (ack-mode on-confirm: acked upstream once confirmed here)."""
    up, down = pair
    federated_exchange(up, down, "orders", "orders-eu", "direct", "eu")
    uch = channel_of(up)
    uch.confirm_delivery()
    down.stop()
    for i in range(20):
        uch.basic_publish("orders", "eu", f"while-stopped-{i}".encode(),
                          pika.BasicProperties(delivery_mode=2))
    down.start()
    dch = channel_of(down)
    wait_until(lambda: depth(dch, "orders-eu") == 20, WITHIN, "20 arrived after the restart")
    assert [b for _, _, b in drain(dch, "orders-eu")] == \
        [f"while-stopped-{i}".encode() for i in range(20)]
    down.kill()
    for i in range(10):
        uch.basic_publish("orders", "eu", f"while-killed-{i}".encode(),
                          pika.BasicProperties(delivery_mode=2))
    down.start()
    dch = channel_of(down)
    got = []
    wait_until(lambda: got.extend(b for _, _, b in drain(dch, "orders-eu"))
               or sum(b.startswith(b"while-killed") for b in got) == 10, WITHIN,
               "10 arrived after a SIGKILL")
    # a get acknowledged just before the SIGKILL may come again (its ack not yet on disk)
    assert [b for b in got if b.startswith(b"while-killed")] == \
        [f"while-killed-{i}".encode() for i in range(10)]
    assert {b for b in got if not b.startswith(b"while-killed")} <= \
        {f"while-stopped-{i}".encode() for i in range(20)}
    running(down)
    assert down.request("GET", "parameters/federation-upstream")[1] == [{
        "value": {"uri": f"amqp://guest:guest@127.0.0.1:{up.port}"}, "vhost": "/",
        "component": "federation-upstream", "name": "origin"}]


def test_a_link_restarted_while_messages_flow_loses_none(pair):
    """A new run binds a new internal exchange upstream before the old one goes (RabbitMQ's
    A/B swap), so nothing published upstream meanwhile falls between the two."""
    up, down = pair
    dch = federated_exchange(up, down, "flow", "flow-q")
    [link] = links(down)
    first = upstream_bindings(up, "flow")[0][1]
    uch = channel_of(up)
    uch.confirm_delivery()
    restart = f"federation-links/vhost/%2F/{link['id']}/{link['node']}/restart"
    for i in range(600):
        uch.basic_publish("flow", "", str(i).encode(), pika.BasicProperties(delivery_mode=2))
        if i in (100, 300):
            assert down.request("DELETE", restart)[0] == 204
    wait_until(lambda: depth(dch, "flow-q") >= 600, WITHIN, "600 arrived")
    assert sorted(int(b) for _, _, b in drain(dch, "flow-q")) == list(range(600))
    [(_, now)] = upstream_bindings(up, "flow")
    assert {first[-1], now[-1]} <= {"A", "B"}


def test_a_link_whose_upstream_queue_is_deleted_sets_up_again(pair):
    """The upstream cancels the link's consumer when its queue is deleted (by hand, a reset
    upstream): the link ends that run and the next declares the queue and bindings again."""
    up, down = pair
    dch = federated_exchange(up, down, "again", "again-q", **{"reconnect-delay": 0.2})
    channel_of(up).queue_delete("federation: again -> down")
    wait_until(lambda: upstream_bindings(up, "again") and [x["status"] for x in links(down)]
               == ["running"] and up.api("queues/%2F/federation%3A%20again%20-%3E%20down")
               .get("consumers") == 1, WITHIN, "set up again")
    channel_of(up).basic_publish("again", "", b"after")
    wait_until(lambda: depth(dch, "again-q") == 1, WITHIN, "flowing again")


def test_a_link_whose_internal_exchange_is_deleted_upstream_sets_up_again(tmp_path):
    """Its queue stays, so no consumer is cancelled: the link's periodic check (RabbitMQ's
    internal_exchange_check_interval, 200 ms here) finds the exchange gone."""
    with BrokerProcess(tmp_path / "up", management=True) as up, \
            BrokerProcess(tmp_path / "down", "--federation-check-interval", "200",
                          management=True) as down:
        named(up, "up"), named(down, "down")
        dch = federated_exchange(up, down, "checked", "checked-q", **{"reconnect-delay": 0.2})
        [(_, internal)] = upstream_bindings(up, "checked")
        channel_of(up).exchange_delete(internal)
        assert upstream_bindings(up, "checked") == []
        wait_until(lambda: upstream_bindings(up, "checked"), WITHIN, "bound again")
        channel_of(up).basic_publish("checked", "", b"after")
        wait_until(lambda: depth(dch, "checked-q") == 1, WITHIN, "flowing again")


def test_a_downstream_killed_while_messages_flow_loses_none(pair):
    """SIGKILL of the downstream mid-flow: each message confirmed upstream arrives after the
    restart (on-confirm: acked upstream only once this broker confirmed it, so durably
    stored; one confirmed here whose ack upstream was lost comes again, as RabbitMQ's)."""
    up, down = pair
    federated_exchange(up, down, "crash", "crash-q")
    uch = channel_of(up)
    uch.confirm_delivery()
    for i in range(1000):
        uch.basic_publish("crash", "", str(i).encode(), pika.BasicProperties(delivery_mode=2))
        if i == 500:
            down.kill()
    down.start()
    dch = channel_of(down)
    got: list = []
    wait_until(lambda: got.extend(int(b) for _, _, b in drain(dch, "crash-q"))
               or set(got) == set(range(1000)), WITHIN, "all 1000 after the restart")
    # order kept: what comes again comes after its first copy, never ahead of a later one
    assert list(dict.fromkeys(got)) == list(range(1000))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_link_reconnects_to_an_upstream_that_restarts(tmp_path):
    """The upstream broker stops (the link is down, in error) and comes back on the same
    port: the link connects again after its reconnect-delay and what the upstream's durable
    queue and bindings kept, and what is published after, arrives."""
    port = free_port()
    with BrokerProcess(tmp_path / "up", "--port", str(port), management=True) as up, \
            BrokerProcess(tmp_path / "down", management=True) as down:
        named(up, "up"), named(down, "down")
        dch = federated_exchange(up, down, "comeback", "comeback-q",
                                 **{"reconnect-delay": 0.2})
        uch = channel_of(up)
        uch.confirm_delivery()
        uch.basic_publish("comeback", "", b"before", pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: depth(dch, "comeback-q") == 1, WITHIN, "before arrived")
        # and acked upstream (its ack follows this broker's confirm): else it comes again
        wait_until(lambda: up.api(f"queues/%2F/{quote('federation: comeback -> down')}")
                   .get("messages") == 0, WITHIN, "before acked upstream")
        up.stop()
        wait_until(lambda: [x["status"] for x in links(down)] == ["error"], WITHIN,
                   "the link down")
        up.start()
        assert up.port == port
        running(down)
        uch = channel_of(up)
        uch.confirm_delivery()
        uch.basic_publish("comeback", "", b"after", pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: depth(dch, "comeback-q") == 2, WITHIN, "after arrived")
        assert [b for _, _, b in drain(dch, "comeback-q")] == [b"before", b"after"]


def test_two_brokers_federating_each_other_deliver_each_message_once(pair):
    """A cycle: each broker's ``ring`` exchange is federated from the other's, with two hops
    allowed. A message goes over once and is not sent back where it came from (the
    upstream's x-federation-upstream exchange knows its downstream by cluster name)."""
    a, b = pair
    for here, there in ((a, b), (b, a)):
        upstream_to(here, there, "peer", **{"max-hops": 2})
        federate(here, "^ring$")
        ch = channel_of(here)
        ch.exchange_declare("ring", "fanout", durable=True)
        ch.queue_declare("ring-q")
        ch.queue_bind("ring-q", "ring", "")
    for here, there in ((a, b), (b, a)):
        running(here)
        wait_until(lambda: upstream_bindings(there, "ring"), WITHIN, "bound upstream")
    ach, bch = channel_of(a), channel_of(b)
    ach.basic_publish("ring", "", b"from a")
    wait_until(lambda: depth(bch, "ring-q") == 1, WITHIN, "a's message at b")
    bch.basic_publish("ring", "", b"from b")
    wait_until(lambda: depth(ach, "ring-q") == 2, WITHIN, "b's message at a")
    # a copy of "from a" sent back by b would be in a's queue before "from b" (one link)
    assert [body for _, _, body in drain(ach, "ring-q")] == [b"from a", b"from b"]
    got = drain(bch, "ring-q")
    assert [body for _, _, body in got] == [b"from a", b"from b"], \
        [(body, props.headers, m.redelivered) for m, props, body in got]
    assert got[0][1].headers["x-received-from"][0]["cluster-name"] == "up"


def test_a_federated_queue_fetches_only_for_its_waiting_consumers(pair):
    up, down = pair
    upstream_to(down, up)
    federate(down, "^jobs$", apply_to="queues", **{"federation-upstream": "origin"})
    uch = channel_of(up)
    uch.queue_declare("jobs", durable=True)
    for i in range(10):
        uch.basic_publish("", "jobs", f"j{i}".encode(), pika.BasicProperties(headers={"CC": ["x"]}))
    conn = pika.BlockingConnection(pika.URLParameters(down.url))
    dch = conn.channel()
    dch.queue_declare("jobs", durable=True)
    [link] = running(down)
    assert (link["type"], link["queue"], link["upstream_queue"], link["consumer_tag"]) == \
        ("queue", "jobs", "jobs", "federation-link-origin")

    def upstream_consumers() -> int:
        return up.api("queues/%2F/jobs").get("consumers")
    assert upstream_consumers() == 0        # no consumer here: the link does not fetch
    got = []
    dch.basic_qos(prefetch_count=3)
    tag = dch.basic_consume("jobs", lambda ch, m, p, body: (
        got.append((body, p.headers)), ch.basic_ack(m.delivery_tag)))
    wait_until(lambda: conn.process_data_events(0.05) or len(got) == 10, WITHIN, "10 fetched")
    assert [body for body, _ in got] == [f"j{i}".encode() for i in range(10)]
    assert got[0][1] == {
        "x-original-cc": ["x"], "x-original-exchange": "", "x-original-routing-key": "jobs",
        "x-received-from": [{"uri": f"amqp://127.0.0.1:{up.port}", "queue": "jobs",
                             "redelivered": False, "visit-count": 1}]}
    wait_until(lambda: upstream_consumers() == 1, WITHIN, "the link consuming upstream")
    dch.basic_cancel(tag)
    wait_until(lambda: upstream_consumers() == 0, WITHIN, "the link paused")
    uch.basic_publish("", "jobs", b"later")
    wait_until(lambda: up.api("queues/%2F/jobs").get("messages") == 1, WITHIN,
               "kept upstream while nobody here waits")


def test_upstreams_and_policies_are_checked_as_rabbitmq_checks_them(tmp_path):
    with BrokerProcess(tmp_path, management=True) as b:
        def put(component, value, name="u"):
            return b.request("PUT", f"parameters/{component}/%2F/{name}", {"value": value})
        assert put("federation-upstream", {"max-hops": "2"}) == (400, {
            "error": "bad_request", "reason": 'Validation failed\n\nmax-hops should be a '
            'number, actually was <<"2">>\nKey "uri" not found in u\n'})
        assert put("federation-upstream", {"uri": "http://x", "ack-mode": "sometimes",
                                           "extra": 1})[1]["reason"] == (
            'Validation failed\n\nUnrecognised terms [{<<"extra">>,1}] in u\nack-mode should '
            'be one of [<<"no-ack">>,<<"on-publish">>,<<"on-confirm">>], actually was '
            '<<"sometimes">>\n'
            '"http://x" not a valid URI: {{unexpected_uri_scheme,"http"},"http://x"}\n')
        assert put("federation-upstream-set", [{"uri": "amqp://"}])[1]["reason"] == (
            'Validation failed\n\nUnrecognised terms [{<<"uri">>,<<"amqp://">>}] in u\n'
            'Key "upstream" not found in u\n')
        assert put("federation-upstream-set", [{"upstream": "a"}, {"upstream": "b"}])[0] == 201
        assert b.request("PUT", "parameters/federation-upstream/nowhere/u",
                         {"value": {"uri": "amqp://"}})[0] == 404
        status, body = b.request("PUT", "policies/%2F/p", {"pattern": ".", "definition": {
            "federation-upstream": "a", "federation-upstream-set": "all"}})
        assert (status, body["reason"]) == (
            400, "Validation failed\n\ncannot specify federation-upstream, federation-upstream-"
                 "set or federation-upstream-pattern together\n")
        status, body = b.request("PUT", "policies/%2F/p", {
            "pattern": ".", "definition": {"federation-upstream-set": 7}})
        assert (status, body["reason"]) == (
            400, "Validation failed\n\n7 is not a valid federation upstream set name\n")
        ch = channel_of(b)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.exchange_declare("helper", "x-federation-upstream")
        assert (info.value.reply_code, info.value.reply_text) == (
            406, "PRECONDITION_FAILED - Argument x-max-hops missing")
        assert b.request("GET", "parameters/federation-upstream-set/%2F/u")[1]["value"] == \
            [{"upstream": "a"}, {"upstream": "b"}]
        assert b.request("DELETE", "parameters/federation-upstream-set/%2F/u")[0] == 204
        assert b.request("DELETE", "parameters/federation-upstream-set/%2F/u")[0] == 404


def test_a_link_that_cannot_connect_is_listed_down_and_can_be_restarted(tmp_path):
    with BrokerProcess(tmp_path / "down", management=True) as down:
        assert down.request("PUT", "parameters/federation-upstream/%2F/nowhere", {"value": {
            "uri": "amqp://127.0.0.1:1", "reconnect-delay": 30}})[0] == 201
        federate(down, "^lonely$")
        channel_of(down).exchange_declare("lonely", "fanout")
        wait_until(lambda: [x["status"] for x in
                            down.request("GET", "federation-links/state/down")[1]] == ["error"],
                   WITHIN, "listed down")
        [link] = links(down)
        assert link["error"].startswith("no upstream URI could be connected to")
        assert down.request("GET", "federation-links/%2F/state/down")[1] == [link]
        path = f"federation-links/vhost/%2F/{link['id']}/{link['node']}/restart"
        assert down.request("DELETE", path)[0] == 204
        assert down.request("DELETE", "federation-links/vhost/%2F/00000000/x/restart")[0] == 404
        assert down.request("GET", "federation-links/nowhere")[0] == 404
