"""The management HTTP API as scripts use it, over raw HTTP: every assertion here holds for
RabbitMQ 3.10's management plugin too (run with ``AMQP_URL`` and ``AMQP_MGMT_URL`` pointing
at one). RabbitMQ's counts and connection lists come from statistics it emits every few
seconds, so what depends on them is awaited, never assumed at once."""
from __future__ import annotations

import base64

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker

from amqpbroker.testing.mgmt_client import ManagementClient, q

from .conftest import url_with, wait_until

STATS = 30.0        # RabbitMQ's statistics lag behind by its emission interval (5 s)


@pytest.fixture
def http(mgmt_url):
    """(status, JSON, headers) for any request, as guest."""
    client = ManagementClient(mgmt_url)

    def call(method, path, body=None, headers=None):
        return client.request(method, path, "guest", "guest", body=body, headers=headers)
    return call


@pytest.fixture
def queue(http, uniq):
    """A durable queue in vhost '/', declared over HTTP and deleted at the end."""
    name = uniq("mq")
    assert http("PUT", f"/api/queues/%2F/{q(name)}", {"durable": True})[0] == 201
    yield name
    http("DELETE", f"/api/queues/%2F/{q(name)}")


@pytest.fixture
def exchange(http, uniq):
    name = uniq("mx")
    assert http("PUT", f"/api/exchanges/%2F/{q(name)}", {"type": "topic"})[0] == 201
    yield name
    http("DELETE", f"/api/exchanges/%2F/{q(name)}")


def publish(http, exchange: str, key: str, payload: str, properties=None,
            encoding: str = "string"):
    status, answer, _ = http("POST", f"/api/exchanges/%2F/{q(exchange)}/publish",
                             {"properties": properties or {}, "routing_key": key,
                              "payload": payload, "payload_encoding": encoding})
    assert status == 200, answer
    return answer


def get(http, queue: str, count: int = 1, ackmode: str = "ack_requeue_false",
        encoding: str = "auto", **extra):
    status, answer, _ = http("POST", f"/api/queues/%2F/{q(queue)}/get",
                             {"count": count, "ackmode": ackmode, "encoding": encoding,
                              **extra})
    assert status == 200, answer
    return answer


def queue_counts(http, name: str):
    status, body, _ = http("GET", f"/api/queues/%2F/{q(name)}")
    assert status == 200
    return body if "messages" in body and "state" in body else None


# ------------------------------------------------------------------------- node
def test_overview_nodes_whoami_and_extensions(http, amqp_host_port):
    status, overview, _ = http("GET", "/api/overview")
    assert status == 200
    for key in ("management_version", "rabbitmq_version", "cluster_name", "node",
                "listeners", "exchange_types"):
        assert key in overview, key
    assert set(overview["object_totals"]) >= {"connections", "channels", "queues",
                                              "exchanges", "consumers"}
    assert {l["port"] for l in overview["listeners"] if l["protocol"] == "amqp"} \
        == {amqp_host_port[1]}
    assert {t["name"] for t in overview["exchange_types"]} >= {"direct", "fanout", "topic",
                                                               "headers"}
    status, nodes, _ = http("GET", "/api/nodes")
    assert status == 200 and [n["name"] for n in nodes] == [overview["node"]]
    assert {"mem_used", "mem_limit", "fd_used", "disk_free", "running"} <= set(nodes[0])
    status, node, _ = http("GET", f"/api/nodes/{q(overview['node'])}")
    assert status == 200 and node["name"] == overview["node"] and node["running"] is True
    assert http("GET", "/api/whoami")[:2] == (200, {"name": "guest", "tags": ["administrator"]})
    status, extensions, _ = http("GET", "/api/extensions")
    assert status == 200 and isinstance(extensions, list)


# ------------------------------------------------------------------------- queues
def test_queue_declare_is_201_then_204_and_refuses_inequivalent(http, queue):
    path = f"/api/queues/%2F/{q(queue)}"
    assert http("PUT", path, {"durable": True})[0] == 204
    assert http("PUT", path, {"durable": False})[:2] == (400, {
        "error": "bad_request", "reason": f"inequivalent arg 'durable' for queue '{queue}' in "
                                          f"vhost '/': received 'false' but current is 'true'"})
    assert http("PUT", f"/api/queues/%2F/amq.{queue}", {})[:2] == (
        401, {"error": "not_authorised", "reason": "Access refused."})
    assert http("PUT", f"/api/queues/no-such-vhost/{q(queue)}", {})[:2] == (
        404, {"error": "not_found", "reason": "vhost_not_found"})


def test_queue_object_carries_rabbitmqs_fields(http, uniq):
    name = uniq("mq")
    path = f"/api/queues/%2F/{q(name)}"
    # rabbitmqadmin sends its booleans as strings
    assert http("PUT", path, {"durable": "false", "auto_delete": "false",
                              "arguments": {"x-max-length": 10}})[0] == 201
    try:
        publish(http, "amq.default", name, "one")
        publish(http, "amq.default", name, "two")
        body = wait_until(lambda: (b := queue_counts(http, name)) and b["messages"] == 2 and b,
                          STATS)
        assert (body["name"], body["vhost"], body["durable"], body["auto_delete"],
                body["exclusive"], body["arguments"], body["type"], body["state"]) == \
            (name, "/", False, False, False, {"x-max-length": 10}, "classic", "running")
        assert (body["messages_ready"], body["messages_unacknowledged"], body["consumers"]) \
            == (2, 0, 0)
        assert isinstance(body["memory"], int) and body["node"]
        listed = http("GET", "/api/queues/%2F")[1]
        assert [x["messages"] for x in listed if x["name"] == name] == [2]
    finally:
        assert http("DELETE", path)[0] == 204


def test_get_ackmodes_encodings_and_properties(http, queue):
    publish(http, "amq.default", queue, "héllo",
            {"content_type": "text/plain", "delivery_mode": 2, "headers": {"h": "v"}})
    publish(http, "amq.default", queue, base64.b64encode(b"\xff\x00bin").decode(),
            encoding="base64")
    first = get(http, queue, count=5, ackmode="ack_requeue_true")
    assert [(m["payload"], m["payload_encoding"], m["payload_bytes"], m["redelivered"],
             m["exchange"], m["routing_key"], m["message_count"]) for m in first] == [
        ("héllo", "string", 6, False, "", queue, 1),
        (base64.b64encode(b"\xff\x00bin").decode(), "base64", 5, False, "", queue, 0)]
    assert first[0]["properties"] == {"content_type": "text/plain", "delivery_mode": 2,
                                      "headers": {"h": "v"}}
    assert first[1]["properties"] == []             # RabbitMQ's empty proplist
    again = get(http, queue, count=1, ackmode="reject_requeue_true", encoding="base64",
                truncate=2)
    assert [(m["payload"], m["payload_encoding"], m["payload_bytes"], m["redelivered"])
            for m in again] == [(base64.b64encode("hé".encode()[:2]).decode(), "base64", 6,
                                 True)]
    taken = get(http, queue, count=2, ackmode="ack_requeue_false")
    assert [m["redelivered"] for m in taken] == [True, True]
    assert get(http, queue, count=2) == []
    assert http("POST", "/api/queues/%2F/no-such-queue-here/get",
                {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})[:2] == (
        404, {"error": "not_found", "reason": "NOT_FOUND - no queue 'no-such-queue-here' in "
                                              "vhost '/'"})
    status, body, _ = http("POST", f"/api/queues/%2F/{q(queue)}/get",
                           {"count": 1, "encoding": "auto"})
    assert status == 400 and body["error"] == "bad_request"


def test_reject_requeue_false_drops_and_purge_empties(http, queue):
    for i in range(3):
        publish(http, "amq.default", queue, f"m{i}")
    assert [m["payload"] for m in get(http, queue, ackmode="reject_requeue_false")] == ["m0"]
    assert http("DELETE", f"/api/queues/%2F/{q(queue)}/contents")[0] == 204
    assert get(http, queue, count=5) == []
    assert http("DELETE", "/api/queues/%2F/no-such-queue-here/contents")[0] == 404


def test_queue_delete_if_empty_if_unused(http, uniq):
    name = uniq("mq")
    path = f"/api/queues/%2F/{q(name)}"
    assert http("PUT", path, {"durable": False})[0] == 201
    publish(http, "amq.default", name, "x")
    assert http("DELETE", path + "?if-empty=true")[:2] == (
        400, {"error": "bad_request", "reason": f"queue '{name}' in vhost '/' not empty"})
    assert http("DELETE", path + "?if-unused=true")[0] == 204
    assert http("DELETE", path)[0] == 404
    assert http("GET", path)[0] == 404


# ------------------------------------------------------------------------- exchanges
def test_exchange_declare_delete_and_refusals(http, uniq):
    name = uniq("mx")
    path = f"/api/exchanges/%2F/{q(name)}"
    assert http("PUT", path, {"type": "topic", "durable": "true"})[0] == 201
    assert http("PUT", path, {"type": "topic", "durable": True})[0] == 204
    # without "durable" a PUT declares a transient exchange, as RabbitMQ's
    assert http("PUT", path, {"type": "topic"})[:2] == (400, {
        "error": "bad_request", "reason": f"inequivalent arg 'durable' for exchange '{name}' "
                                          f"in vhost '/': received 'false' but current is "
                                          f"'true'"})
    assert http("PUT", path, {"type": "direct", "durable": True})[:2] == (400, {
        "error": "bad_request", "reason": f"inequivalent arg 'type' for exchange '{name}' in "
                                          f"vhost '/': received 'direct' but current is 'topic'"})
    status, body, _ = http("GET", path)
    assert status == 200 and (body["name"], body["type"], body["durable"], body["internal"]) \
        == (name, "topic", True, False)
    assert http("PUT", f"/api/exchanges/%2F/{q(uniq('mx'))}", {"type": "no-such-type"})[:2] \
        == (400, {"error": "bad_request", "reason": "unknown exchange type 'no-such-type'"})
    assert http("PUT", "/api/exchanges/%2F/amq.mine", {"type": "direct"})[:2] == (
        401, {"error": "not_authorised", "reason": "Access refused."})
    assert http("DELETE", "/api/exchanges/%2F/amq.direct")[0] == 401
    assert http("DELETE", path + "?if-unused=true")[0] == 204
    assert http("DELETE", path)[0] == 404


def test_publish_answers_routed(http, queue, exchange):
    assert publish(http, "amq.default", queue, "direct") == {"routed": True}
    assert publish(http, exchange, "nowhere", "lost") == {"routed": False}
    status, body, _ = http("POST", "/api/exchanges/%2F/no-such-exchange-here/publish",
                           {"properties": {}, "routing_key": "", "payload": "",
                            "payload_encoding": "string"})
    assert (status, body) == (400, {"error": "bad_request", "reason": "404 NOT_FOUND - no "
                                    "exchange 'no-such-exchange-here' in vhost '/'"})
    status, body, _ = http("POST", "/api/exchanges/%2F/amq.default/publish",
                           {"properties": {}, "routing_key": queue, "payload": "x"})
    assert status == 400 and body["error"] == "bad_request"


# ------------------------------------------------------------------------- bindings
def test_binding_create_list_get_delete_by_properties_key(http, queue, exchange):
    between = f"/api/bindings/%2F/e/{q(exchange)}/q/{q(queue)}"
    status, _, headers = http("POST", between, {"routing_key": "a.#", "arguments": {"k": "v"}})
    assert status == 201 and headers["Location"].startswith(q(queue) + "/a.%2523~")
    status, _, headers = http("POST", between, {})
    assert status == 201 and headers["Location"] == q(queue) + "/~"
    status, listed, _ = http("GET", between)
    assert status == 200
    assert sorted((b["routing_key"], b["arguments"] == {"k": "v"}) for b in listed) == \
        [("", False), ("a.#", True)]
    assert all((b["source"], b["destination"], b["destination_type"], b["vhost"])
               == (exchange, queue, "queue", "/") for b in listed)
    keyed = next(b for b in listed if b["routing_key"] == "a.#")
    assert keyed["properties_key"].startswith("a.%23~")
    one = f"{between}/{q(keyed['properties_key'])}"
    assert http("GET", one)[:2] == (200, keyed)
    assert publish(http, exchange, "a.b.c", "bound") == {"routed": True}
    # a queue's bindings start with the default exchange's, as RabbitMQ lists them
    status, of_queue, _ = http("GET", f"/api/queues/%2F/{q(queue)}/bindings")
    assert status == 200 and (of_queue[0]["source"], of_queue[0]["routing_key"],
                              of_queue[0]["properties_key"]) == ("", queue, q(queue))
    assert len(of_queue) == 3
    source = http("GET", f"/api/exchanges/%2F/{q(exchange)}/bindings/source")[1]
    assert sorted(b["routing_key"] for b in source) == ["", "a.#"]
    assert http("DELETE", one)[0] == 204
    assert http("DELETE", one)[0] == 404
    assert http("DELETE", f"{between}/~")[0] == 204
    assert http("GET", between)[:2] == (200, [])
    assert http("POST", f"/api/bindings/%2F/e/{q(exchange)}/q/no-such-queue-here", {})[:2] \
        == (404, {"error": "not_found", "reason": "no queue 'no-such-queue-here' in vhost '/'"})


def test_exchange_to_exchange_binding(http, exchange, uniq):
    other = uniq("mx")
    assert http("PUT", f"/api/exchanges/%2F/{q(other)}", {"type": "fanout"})[0] == 201
    try:
        status, _, headers = http("POST", f"/api/bindings/%2F/e/{q(exchange)}/e/{q(other)}",
                                  {"routing_key": "r"})
        assert status == 201 and headers["Location"] == f"{q(other)}/r"
        dest = http("GET", f"/api/exchanges/%2F/{q(other)}/bindings/destination")[1]
        assert [(b["source"], b["destination_type"], b["routing_key"], b["properties_key"])
                for b in dest] == [(exchange, "exchange", "r", "r")]
        assert http("DELETE", f"/api/bindings/%2F/e/{q(exchange)}/e/{q(other)}/r")[0] == 204
        assert http("GET", f"/api/exchanges/%2F/{q(other)}/bindings/destination")[1] == []
    finally:
        http("DELETE", f"/api/exchanges/%2F/{q(other)}")


# ------------------------------------------------------------------------- lists
def test_list_paging_filtering_columns_and_sorting(http, uniq):
    prefix = uniq("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        assert http("PUT", f"/api/exchanges/%2F/{q(n)}", {"type": "direct"})[0] == 201
    try:
        status, page, _ = http("GET", f"/api/exchanges/%2F?page=2&page_size=2&name={prefix}"
                                      "&columns=name,type")
        assert status == 200
        assert {k: v for k, v in page.items() if k != "total_count"} == {
            "filtered_count": 5, "item_count": 2, "page": 2, "page_count": 3, "page_size": 2,
            "items": [{"name": names[2], "type": "direct"},
                      {"name": names[3], "type": "direct"}]}
        assert page["total_count"] >= 5 + 7
        status, page, _ = http("GET", f"/api/exchanges/%2F?page=1&name={prefix.upper()}-[34]$"
                                      "&use_regex=true")
        assert status == 200 and page["filtered_count"] == 2   # matched ignoring case
        status, page, _ = http("GET", f"/api/exchanges/%2F?page=1&name={prefix}-[34]$"
                                      "&use_regex=true&columns=name")
        assert page["items"] == [{"name": names[3]}, {"name": names[4]}]
        status, listed, _ = http("GET", "/api/exchanges/%2F?sort=name&sort_reverse=true"
                                        "&columns=name")
        ours = [x["name"] for x in listed if x["name"].startswith(prefix)]
        assert ours == names[::-1]
        assert http("GET", f"/api/exchanges/%2F?page=4&page_size=2&name={prefix}")[:2] == (
            400, {"error": "page_out_of_range",
                  "reason": "Page out of range, page: 4 page size: 2, len: 5"})
        assert http("GET", "/api/exchanges/%2F?page=1&page_size=501")[:2] == (
            400, {"error": "invalid_pagination_parameters",
                  "reason": "Invalid pagination parameters: page number 1, page size 501"})
        assert http("GET", "/api/exchanges/%2F?page=abc")[:2] == (
            400, {"error": "bad_request", "reason": "Pagination parameters are invalid"})
    finally:
        for n in names:
            http("DELETE", f"/api/exchanges/%2F/{q(n)}")


def test_queue_pages_by_name_and_by_depth(http, uniq):
    prefix = uniq("qpage")
    names = [f"{prefix}-{i}" for i in range(3)]
    for depth, n in enumerate(names, 1):
        assert http("PUT", f"/api/queues/%2F/{q(n)}", {})[0] == 201
        for _ in range(depth):
            publish(http, "amq.default", n, "x")
    try:
        status, page, _ = http("GET", f"/api/queues/%2F?page=2&page_size=2&name={prefix}"
                                      "&columns=name")
        assert status == 200 and (page["items"], page["filtered_count"], page["page_count"]) \
            == ([{"name": names[2]}], 3, 2)

        def deepest_first():
            page = http("GET", f"/api/queues?page=1&page_size=2&name={prefix}&sort=messages"
                               "&sort_reverse=true&columns=name,messages")[1]
            return page["items"] == [{"name": names[2], "messages": 3},
                                     {"name": names[1], "messages": 2}]
        wait_until(deepest_first, STATS)
    finally:
        for n in names:
            http("DELETE", f"/api/queues/%2F/{q(n)}")


# ------------------------------------------------------------------------- connections
def test_connections_channels_consumers_and_close_with_reason(http, connect, uniq, queue):
    tag = uniq("ctag")
    conn = connect(client_properties={"connection_name": tag})
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    ch.basic_consume(queue, lambda *a: None, consumer_tag=tag)

    def ours():
        for c in http("GET", "/api/connections")[1]:
            if c.get("client_properties", {}).get("connection_name") == tag:
                return c
        return None
    c = wait_until(ours, STATS)
    assert (c["user"], c["vhost"], c["protocol"], c["type"]) == \
        ("guest", "/", "AMQP 0-9-1", "network")
    assert " -> " in c["name"] and c["peer_port"] and c["port"]
    status, one, _ = http("GET", f"/api/connections/{q(c['name'])}")
    assert status == 200 and one["name"] == c["name"]
    channels = wait_until(lambda: [x for x in http("GET", f"/api/connections/{q(c['name'])}"
                                                          "/channels")[1]
                                   if "prefetch_count" in x], STATS)
    assert [(x["number"], x["prefetch_count"], x["name"]) for x in channels] == \
        [(1, 7, f"{c['name']} (1)")]
    assert channels[0]["connection_details"]["name"] == c["name"]
    status, channel, _ = http("GET", f"/api/channels/{q(channels[0]['name'])}")
    assert status == 200 and channel["number"] == 1
    consumer = wait_until(lambda: [x for x in http("GET", "/api/consumers/%2F")[1]
                                   if x["consumer_tag"] == tag], STATS)[0]
    assert (consumer["queue"], consumer["ack_required"], consumer["prefetch_count"],
            consumer["channel_details"]["connection_name"]) == \
        ({"name": queue, "vhost": "/"}, True, 7, c["name"])
    assert tag in [x["consumer_tag"] for x in http("GET", "/api/consumers")[1]]
    detail = wait_until(lambda: (b := queue_counts(http, queue)) and b["consumers"] == 1 and b,
                        STATS)
    assert [x["consumer_tag"] for x in detail["consumer_details"]] == [tag]

    assert http("DELETE", f"/api/connections/{q(c['name'])}",
                headers={"X-Reason": "maintenance window"})[0] == 204
    with pytest.raises(ConnectionClosedByBroker) as closed:
        conn.process_data_events(time_limit=5)
        conn.process_data_events(time_limit=5)
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == "CONNECTION_FORCED - maintenance window"
    wait_until(lambda: ours() is None, STATS)
    assert http("GET", f"/api/connections/{q(c['name'])}")[0] == 404
    assert http("DELETE", f"/api/connections/{q(c['name'])}")[0] == 404


def test_management_user_sees_and_closes_only_its_own_connection(http, mgmt, mgmt_url,
                                                                 broker_url, connect, uniq):
    name, password = uniq("mu"), "pw-s3cret"
    assert mgmt.put(f"/api/users/{q(name)}", {"password": password,
                                              "tags": "management"}) == 201
    assert mgmt.put(f"/api/permissions/%2F/{q(name)}",
                    {"configure": ".*", "write": ".*", "read": ".*"}) == 201
    try:
        mine = connect(url_with(broker_url, user=name, password=password),
                       client_properties={"connection_name": name})
        mine.channel()
        guests = connect(client_properties={"connection_name": name + "-guest"})
        client = ManagementClient(mgmt_url)

        def seen():
            names = {c["client_properties"].get("connection_name"): c["name"]
                     for c in http("GET", "/api/connections")[1]}
            return names if {name, name + "-guest"} <= set(names) else None
        names = wait_until(seen, STATS)
        listed = client.get("/api/connections", name, password)[1]
        assert [c["user"] for c in listed] == [name]
        status, body, _ = client.request("GET", f"/api/connections/{q(names[name + '-guest'])}",
                                         name, password)
        assert (status, body) == (401, {"error": "not_authorised",
                                        "reason": "User not authorised to access object"})
        assert client.request("DELETE", f"/api/connections/{q(names[name + '-guest'])}",
                              name, password)[0] == 401
        assert guests.is_open
        assert client.request("DELETE", f"/api/connections/{q(names[name])}", name,
                              password)[0] == 204
        with pytest.raises(ConnectionClosedByBroker):
            wait_until(lambda: mine.process_data_events(0.1) or not mine.is_open, STATS)
    finally:
        mgmt.delete(f"/api/users/{q(name)}")


# ------------------------------------------------------------------------- health
def test_health_checks(http, amqp_host_port):
    for path in ("/api/health/checks/alarms", "/api/health/checks/local-alarms",
                 "/api/health/checks/virtual-hosts", "/api/aliveness-test/%2F"):
        assert http("GET", path)[:2] == (200, {"status": "ok"}), path
    port = amqp_host_port[1]
    assert http("GET", f"/api/health/checks/port-listener/{port}")[:2] == (
        200, {"status": "ok", "port": port})
    status, body, _ = http("GET", "/api/health/checks/port-listener/1")
    assert (status, body["status"], body["reason"], body["missing"]) == (
        503, "failed", "No active listener", 1)
    assert port in body["ports"]
    assert http("GET", "/api/health/checks/port-listener/abc")[:2] == (
        400, {"error": "bad_request", "reason": "Invalid port"})
    assert http("GET", "/api/aliveness-test/no-such-vhost-here")[0] == 404


def test_protocol_listener_and_node_checks(http):
    """The checks Kubernetes probes and rolling upgrades use, on a single node."""
    for protocol, named in (("amqp", "amqp"), ("amqp091", "amqp"), ("AMQP0-9-1", "amqp"),
                            ("http", "http"), ("management", "http")):
        assert http("GET", f"/api/health/checks/protocol-listener/{protocol}")[:2] == (
            200, {"status": "ok", "protocol": named}), protocol
    status, body, _ = http("GET", "/api/health/checks/protocol-listener/stomps")
    assert (status, body["status"], body["reason"], body["missing"]) == (
        503, "failed", "No active listener", "stomp/ssl")
    assert {"amqp", "http"} <= set(body["protocols"])
    for check in ("node-is-quorum-critical", "node-is-mirror-sync-critical"):
        assert http("GET", f"/api/health/checks/{check}")[:2] == (
            200, {"status": "ok", "reason": "single node cluster"}), check
    node = http("GET", "/api/overview")[1]["node"]
    for path in ("/api/healthchecks/node", f"/api/healthchecks/node/{q(node)}"):
        assert http("GET", path)[:2] == (200, {"status": "ok"}), path
    assert http("GET", "/api/health/checks/certificate-expiration/1/months")[:2] == (
        200, {"status": "ok"})          # no TLS listener here: nothing expires
    assert http("GET", "/api/health/checks/certificate-expiration/x/days")[:2] == (
        400, {"error": "bad_request", "reason": "Invalid expiration value."})


def test_a_path_with_one_trailing_slash_is_the_path_without_it(http, uniq):
    """As cowboy routes RabbitMQ's API: amqpstorm asks ``/api/healthchecks/node/``, scripts
    write ``/api/queues/%2F/``. Two slashes are another path (404), as there."""
    name = uniq("slash")
    assert http("PUT", f"/api/queues/%2F/{q(name)}/", {"durable": False})[0] == 201
    try:
        assert http("GET", f"/api/queues/%2F/{q(name)}/")[1]["name"] == name
        assert name in [x["name"] for x in http("GET", "/api/queues/%2F/")[1]]
        assert http("GET", "/api/healthchecks/node/")[:2] == (200, {"status": "ok"})
        assert http("GET", "/api/overview/")[1]["node"] == http("GET", "/api/overview")[1]["node"]
        for path in ("/api/overview//", "/api//overview"):
            assert http("GET", path)[0] == 404, path
    finally:
        assert http("DELETE", f"/api/queues/%2F/{q(name)}/")[0] == 204
    assert http("GET", f"/api/queues/%2F/{q(name)}")[0] == 404


def test_the_api_index_needs_no_login_and_lists_the_paths(mgmt_url):
    """``/api`` and ``/api/`` redirect (301) to ``/api/index.html``, the API's help page,
    served without a login; it names the paths (RabbitMQ's is written by hand, ours made
    from the routes)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(mgmt_url)
    for path in ("/api", "/api/"):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request("GET", path)
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Location")) == (301, "/api/index.html"), path
        conn.close()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/api/index.html")
    answer = conn.getresponse()
    page = answer.read().decode()
    conn.close()
    assert answer.status == 200 and answer.getheader("Content-Type").startswith("text/html")
    for path in ("/api/overview", "/api/queues", "/api/exchanges", "/api/definitions"):
        assert path in page, path


# ------------------------------------------------------------------------- users
def test_users_without_permissions_and_bulk_delete(http, uniq):
    bare, granted = uniq("bare"), uniq("granted")
    for name in (bare, granted):
        assert http("PUT", f"/api/users/{q(name)}", {"password": "pw", "tags": ""})[0] == 201
    assert http("PUT", f"/api/permissions/%2F/{q(granted)}",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    try:
        status, users, _ = http("GET", "/api/users/without-permissions")
        names = {u["name"] for u in users}
        assert status == 200 and bare in names and granted not in names
        assert {"name", "password_hash", "tags"} <= set(users[0])
        # a name that does not exist: 400, as RabbitMQ (which deleted those before it: we
        # delete none)
        status, body, _ = http("POST", "/api/users/bulk-delete",
                               {"users": [uniq("nobody")]})
        assert (status, body) == (400, {"error": "bad_request",
                                        "reason": ["no_such_user", body["reason"][1]]})
        assert http("POST", "/api/users/bulk-delete", {})[0] == 400
        assert http("POST", "/api/users/bulk-delete", {"users": [bare, granted]})[0] == 204
        assert http("GET", f"/api/users/{q(bare)}")[0] == 404
        assert http("GET", f"/api/users/{q(granted)}")[0] == 404
    finally:
        for name in (bare, granted):
            http("DELETE", f"/api/users/{q(name)}")


def test_a_users_connections_listed_and_closed_together(http, broker_url, uniq):
    """(RabbitMQ 3.10 answers 500 to anyone but an administrator here: who else may is in
    tests/integration/test_management_api.py.)"""
    name = uniq("conn-user")
    assert http("PUT", f"/api/users/{q(name)}", {"password": "pw", "tags": "management"})[0] \
        == 201
    assert http("PUT", f"/api/permissions/%2F/{q(name)}",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    conns = [pika.BlockingConnection(pika.URLParameters(
        url_with(broker_url, user=name, password="pw"))) for _ in range(2)]
    path = f"/api/connections/username/{q(name)}"
    try:
        wait_until(lambda: len(http("GET", path)[1]) == 2, STATS)
        assert {c["user"] for c in http("GET", path)[1]} == {name}
        assert http("DELETE", path, headers={"X-Reason": "bulk close"})[0] == 204
        for conn in conns:
            with pytest.raises(ConnectionClosedByBroker) as e:
                wait_until(lambda: conn.process_data_events(0.1) or not conn.is_open, STATS)
            assert "bulk close" in str(e.value)
        wait_until(lambda: http("GET", path)[1] == [], STATS)
    finally:
        for conn in conns:
            if conn.is_open:
                conn.close()
        http("DELETE", f"/api/users/{q(name)}")


# ------------------------------------------------------------------------- parameters
def test_a_vhosts_limits_are_its_vhost_limits_parameter(http, uniq):
    vhost = uniq("pvh")
    assert http("PUT", f"/api/vhosts/{q(vhost)}", {})[0] == 201
    path = f"/api/parameters/vhost-limits/{q(vhost)}/limits"
    try:
        assert http("GET", path)[0] == 404
        assert http("PUT", f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 7})[0] == 204
        item = {"value": {"max-queues": 7}, "vhost": vhost, "component": "vhost-limits",
                "name": "limits"}
        assert http("GET", path)[:2] == (200, item)
        for listing in ("/api/parameters", "/api/parameters/vhost-limits",
                        f"/api/parameters/vhost-limits/{q(vhost)}"):
            assert item in http("GET", listing)[1], listing
        assert http("GET", f"/api/parameters/shovel/{q(vhost)}")[:2] == (200, [])
        # set through the parameter, seen as the vhost's limits
        assert http("PUT", path, {"value": {"max-connections": 3}})[0] == 204
        assert http("GET", f"/api/vhost-limits/{q(vhost)}")[1] == [
            {"vhost": vhost, "value": {"max-connections": 3}}]
        status, body, _ = http("PUT", path, {"value": {"max-queues": 1.5}})
        assert (status, body["reason"]) == (
            400, "Validation failed\n\nmax-queues should be a number, actually was 1.5\n")
        # a component no plugin of either broker has
        status, body, _ = http("PUT", f"/api/parameters/x-no-such-plugin/{q(vhost)}/u1",
                               {"value": {"uri": "amqp://"}})
        assert (status, body["reason"]) == (
            400, "Validation failed\n\ncomponent x-no-such-plugin not found\n")
        assert http("DELETE", path)[0] == 204
        assert http("GET", path)[0] == 404
        assert http("GET", f"/api/vhost-limits/{q(vhost)}")[1] == []
    finally:
        http("DELETE", f"/api/vhosts/{q(vhost)}")


def test_columns_cut_one_object_as_a_list(http):
    assert http("GET", "/api/vhosts/%2F?columns=name,tracing")[:2] == (
        200, {"name": "/", "tracing": False})
    assert http("GET", "/api/whoami?columns=name")[:2] == (200, {"name": "guest"})
    assert set(http("GET", "/api/overview?columns=node,object_totals.queues")[1]) == \
        {"node", "object_totals"}


# ------------------------------------------------------------------------- definitions
def test_vhost_definitions_export_and_import_into_another_vhost(http, uniq):
    source, target = uniq("vh"), uniq("vh")
    for vh in (source, target):
        assert http("PUT", f"/api/vhosts/{q(vh)}", {})[0] == 201
    try:
        assert http("PUT", f"/api/queues/{q(source)}/dq", {"durable": True})[0] == 201
        assert http("PUT", f"/api/exchanges/{q(source)}/dx",
                    {"type": "fanout", "durable": True})[0] == 201
        assert http("POST", f"/api/bindings/{q(source)}/e/dx/q/dq", {"routing_key": "k"})[0] \
            == 201
        status, defs, _ = http("GET", f"/api/definitions/{q(source)}")
        assert status == 200
        assert [(x["name"], x["durable"]) for x in defs["queues"]] == [("dq", True)]
        assert [(x["name"], x["type"]) for x in defs["exchanges"]] == [("dx", "fanout")]
        assert [(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]] \
            == [("dx", "dq", "k")]
        assert not any("vhost" in x for kind in ("queues", "exchanges", "bindings")
                       for x in defs[kind])
        assert http("POST", f"/api/definitions/{q(target)}", defs)[0] == 204
        assert http("GET", f"/api/queues/{q(target)}/dq")[0] == 200
        assert http("GET", f"/api/exchanges/{q(target)}/dx")[1]["type"] == "fanout"
        assert [b["routing_key"] for b in http("GET", f"/api/bindings/{q(target)}/e/dx/q/dq")[1]] \
            == ["k"]
        assert http("GET", "/api/definitions/no-such-vhost-here")[:2] == (
            400, {"error": "bad_request", "reason": "vhost_not_found"})
    finally:
        for vh in (source, target):
            http("DELETE", f"/api/vhosts/{q(vh)}")


# ------------------------------------------------------------------------- access
def test_writes_need_the_vhost_and_the_permission(mgmt, mgmt_url, uniq):
    """A management user may change only vhosts it has permissions in (else 401 "User not
    authorised to access virtual host"), and there only what its permissions allow (else
    401 "Access refused.", as a channel of it would be refused)."""
    mine, other, name, password = uniq("va"), uniq("vb"), uniq("mu"), "pw-s3cret"
    for vh in (mine, other):
        assert mgmt.put(f"/api/vhosts/{q(vh)}", {}) == 201
    assert mgmt.put(f"/api/users/{q(name)}", {"password": password,
                                              "tags": "management"}) == 201
    assert mgmt.put(f"/api/permissions/{q(mine)}/{q(name)}",
                    {"configure": "^mine-.*", "write": "^mine-.*", "read": "^mine-.*"}) == 201
    client = ManagementClient(mgmt_url)

    def call(method, path, body=None):
        return client.request(method, path, name, password, body=body)[:2]
    try:
        vhost_refused = (401, {"error": "not_authorised",
                               "reason": "User not authorised to access virtual host"})
        access_refused = (401, {"error": "not_authorised", "reason": "Access refused."})
        assert call("PUT", f"/api/queues/{q(other)}/mine-q", {}) == vhost_refused
        assert call("PUT", f"/api/exchanges/{q(other)}/mine-x", {"type": "direct"}) \
            == vhost_refused
        assert call("POST", f"/api/exchanges/{q(other)}/amq.default/publish",
                    {"properties": {}, "routing_key": "k", "payload": "",
                     "payload_encoding": "string"}) == vhost_refused
        assert call("PUT", f"/api/queues/{q(mine)}/theirs-q", {}) == access_refused
        assert call("PUT", f"/api/exchanges/{q(mine)}/theirs-x", {"type": "direct"}) \
            == access_refused
        assert call("PUT", f"/api/queues/{q(mine)}/mine-q", {})[0] == 201
        assert call("PUT", f"/api/exchanges/{q(mine)}/mine-x", {"type": "direct"})[0] == 201
        assert call("POST", f"/api/bindings/{q(mine)}/e/mine-x/q/mine-q", {})[0] == 201
        assert call("DELETE", f"/api/queues/{q(mine)}/mine-q")[0] == 204
        assert call("GET", "/api/definitions")[0] == 401
    finally:
        for vh in (mine, other):
            mgmt.delete(f"/api/vhosts/{q(vh)}")
        mgmt.delete(f"/api/users/{q(name)}")


# ------------------------------------------------------------------------- global parameters
def test_the_cluster_name_set_through_the_api_names_the_broker_everywhere(http, connect):
    """``PUT /api/cluster-name``: the overview, the global parameter ``cluster_name``, the
    definitions and the server properties of connections opened after it say the new name."""
    before = http("GET", "/api/cluster-name")[1]["name"]
    try:
        assert http("PUT", "/api/cluster-name", {"name": "interop-named"})[0] == 204
        assert http("GET", "/api/cluster-name")[:2] == (200, {"name": "interop-named"})
        assert http("GET", "/api/overview?columns=cluster_name")[1] == {
            "cluster_name": "interop-named"}
        assert {"name": "cluster_name", "value": "interop-named"} in \
            http("GET", "/api/global-parameters")[1]
        assert http("GET", "/api/global-parameters/cluster_name")[:2] == (
            200, {"name": "cluster_name", "value": "interop-named"})
        assert {"name": "cluster_name", "value": "interop-named"} in \
            http("GET", "/api/definitions")[1]["global_parameters"]
        conn = connect()
        assert conn._impl.server_properties["cluster_name"] == "interop-named"
        assert http("PUT", "/api/cluster-name", {})[0] == 400
        assert http("GET", "/api/cluster-name")[1] == {"name": "interop-named"}
    finally:
        http("PUT", "/api/cluster-name", {"name": before})


def test_a_global_parameter_of_ones_own_is_kept(http, uniq):
    name = uniq("param").replace("-", "_")
    path = f"/api/global-parameters/{name}"
    try:
        assert http("GET", path)[0] == 404
        assert http("PUT", path, {"value": {"a": 1, "b": ["x"]}})[0] == 201
        assert http("PUT", path, {"value": {"a": 2}})[0] == 204
        assert http("GET", path)[:2] == (200, {"name": name, "value": {"a": 2}})
        assert {"name": name, "value": {"a": 2}} in http("GET", "/api/global-parameters")[1]
        assert {"name": name, "value": {"a": 2}} in \
            http("GET", "/api/definitions")[1]["global_parameters"]
        assert http("DELETE", path)[0] == 204
        assert http("GET", path)[0] == 404
    finally:
        http("DELETE", path)


# ------------------------------------------------------------------------- feature flags

def test_feature_flags_are_listed_and_enabling_one_is_answered(http, mgmt_url, uniq):
    """RabbitMQ's shape (this broker lists RabbitMQ 3.13's flags of what it has, all
    enabled; RabbitMQ 3.10.8 its own): sorted by name, administrators only."""
    status, flags, _ = http("GET", "/api/feature-flags")
    assert status == 200 and flags
    assert [f["name"] for f in flags] == sorted(f["name"] for f in flags)
    for f in flags:
        assert set(f) == {"name", "desc", "doc_url", "state", "stability", "provided_by"}, f
        assert f["state"] in ("enabled", "disabled") and f["stability"] in (
            "required", "stable", "experimental")
    states = {f["name"]: f["state"] for f in flags}
    assert states["quorum_queue"] == states["stream_queue"] == "enabled"
    assert http("PUT", "/api/feature-flags/quorum_queue/enable", {})[0] == 204
    status, body, _ = http("PUT", "/api/feature-flags/no_such_flag/enable", {})
    assert (status, body) == (400, {"error": "bad_request", "reason": "unsupported"})
    name = uniq("ffmon")
    assert http("PUT", f"/api/users/{q(name)}", {"password": "p", "tags": "monitoring"})[0] \
        == 201
    try:
        status, body, _ = ManagementClient(mgmt_url).request("GET", "/api/feature-flags",
                                                             name, "p")
        assert (status, body["reason"]) == (401, "Not administrator user")
    finally:
        http("DELETE", f"/api/users/{q(name)}")


def test_auth_settings_need_no_login_and_all_configuration_is_the_definitions(mgmt_url, http):
    """``/api/auth`` is what RabbitMQ's UI reads before its login form (no OAuth 2 here, nor
    on a RabbitMQ without it); ``/api/all-configuration`` the definitions' older name."""
    status, body, _ = ManagementClient(mgmt_url).request("GET", "/api/auth", None)
    assert status == 200 and body["enable_uaa"] is False
    status, whole, _ = http("GET", "/api/all-configuration")
    assert status == 200
    assert {"users", "vhosts", "permissions", "queues", "exchanges", "bindings",
            "policies", "parameters"} <= set(whole)
    assert whole["vhosts"] == http("GET", "/api/definitions")[1]["vhosts"]
    assert ManagementClient(mgmt_url).request("GET", "/api/all-configuration", None)[0] == 401


def test_a_nodes_memory_breakdown_in_rabbitmqs_categories(http):
    node = http("GET", "/api/overview")[1]["node"]
    status, body, _ = http("GET", f"/api/nodes/{q(node)}/memory")
    assert status == 200
    memory = body["memory"]
    assert {"connection_other", "queue_procs", "quorum_queue_procs", "stream_queue_procs",
            "binary", "code", "other_system", "strategy", "total"} <= set(memory)
    assert memory["strategy"] == "rss" and memory["total"]["rss"] > 0
    assert all(isinstance(v, int) and v >= 0 for k, v in memory.items()
               if k not in ("strategy", "total"))
    status, body, _ = http("GET", f"/api/nodes/{q(node)}/memory/relative")
    assert status == 200 and body["memory"]["total"] == 100
    assert set(body["memory"]) == {k for k in memory if k != "strategy"}
    assert http("GET", "/api/nodes/no-such-node@x/memory")[0] == 404
