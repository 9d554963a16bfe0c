"""The management node's requests and answers (amqpbroker/amqp10/management.py), no I/O:
what each request becomes, RabbitMQ's refusals, a binding's location read back, and the
response message as an AMQP 1.0 client decodes it."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proton import Message

from amqpbroker.amqp10 import management as m
from amqpbroker.stream_protocol import amqp10 as types


def request(method: str, path: str, body=None, **props) -> m.Request:
    msg = Message(id="req-1", body=body, inferred=False, reply_to="$me", address=path,
                  subject=method, **props)
    return m.parse(msg.encode())


def op(method: str, path: str, body=None) -> m.Operation:
    return m.operation(request(method, path, body))


def test_what_each_request_becomes():
    q = op("PUT", "/queues/orders%2Feu", {"durable": False, "exclusive": True,
                                         "arguments": {"x-queue-type": "quorum",
                                                       "x-max-length": 10}})
    assert (q.kind, q.name, q.durable, q.exclusive, q.auto_delete) == \
        ("declare_queue", "orders/eu", False, True, False)
    assert q.arguments == {"x-queue-type": "quorum", "x-max-length": 10}
    assert op("PUT", "/queues/q", {}).durable is True          # RabbitMQ's default
    assert (op("GET", "/queues/q").kind, op("DELETE", "/queues/q").kind,
            op("DELETE", "/queues/q/messages").kind) == \
        ("get_queue", "delete_queue", "purge_queue")
    x = op("PUT", "/exchanges/logs", {"type": "fanout", "auto_delete": True})
    assert (x.kind, x.name, x.type, x.durable, x.auto_delete, x.internal) == \
        ("declare_exchange", "logs", "fanout", True, True, False)
    b = op("POST", "/bindings", {"source": "logs", "destination_exchange": "all",
                                 "binding_key": "k", "arguments": {}})
    assert (b.kind, b.name, b.destination_kind, b.destination, b.key) == \
        ("bind", "logs", "exchange", "all", "k")
    u = op("DELETE", "/bindings/src=logs;dstq=q%201;key=a.b;args=")
    assert (u.kind, u.name, u.destination_kind, u.destination, u.key, u.args_hash) == \
        ("unbind", "logs", "queue", "q 1", "a.b", "")
    g = op("GET", "/bindings?src=logs&dstq=q&key=k")
    assert (g.kind, g.name, g.destination, g.key) == ("list_bindings", "logs", "q", "k")


@pytest.mark.parametrize("method,path,body,status,text", [
    ("PUT", "/queues/amq.x", {}, 403, "queue 'amq.x' starts with reserved prefix 'amq.'"),
    ("DELETE", "/exchanges/amq.direct", None, 403,
     "exchange 'amq.direct' starts with reserved prefix 'amq.'"),
    ("PUT", "/exchanges/", {}, 403, "operation not permitted on the default exchange"),
    ("PUT", "/queues/", {}, 400, "declare queue with empty name not allowed"),
    ("PUT", "/queues/a%0Ab", {}, 400,
     "Bad name 'a\nb': line feed and carriage return characters not allowed"),
    ("PUT", "/queues/q", {"durable": "yes"}, 400, "bad queue property 'durable': not a "
                                                   "boolean"),
    ("PUT", "/queues/q", {"colour": True}, 400, "bad queue property 'colour'"),
    ("PUT", "/queues/q", "not a map", 400, "the queue must be an amqp-value map"),
    ("GET", "/queues/q", {"a": 1}, 400, "this request takes no body (an amqp-value null)"),
    ("POST", "/bindings", {"source": "x", "binding_key": "", "arguments": {}}, 400,
     "binding fields missing: destination_queue or destination_exchange"),
    ("POST", "/bindings", {"source": "", "destination_queue": "q", "binding_key": "",
                           "arguments": {}}, 403,
     "operation not permitted on the default exchange"),
    ("DELETE", "/bindings/src=x;dstq=y", None, 400, "bad binding path segment "
                                                     "'src=x;dstq=y'"),
    ("GET", "/bindings?src=x&key=k", None, 400,
     "missing 'dste' or 'dstq' in query: 'src=x&key=k'"),
    ("PATCH", "/queues/q", None, 400, "PATCH /queues/q: no such request"),
])
def test_refusals(method, path, body, status, text):
    with pytest.raises(m.HttpError) as err:
        op(method, path, body)
    assert (err.value.status, err.value.text) == (status, text)


def test_a_request_needs_its_path_method_and_reply_to():
    msg = Message(id="x", body=None, inferred=False, address="/queues/q", subject="GET")
    with pytest.raises(m.HttpError) as err:
        m.parse(msg.encode())
    assert err.value.status == 400 and "reply-to" in err.value.text


names = st.text(min_size=1, max_size=20).filter(lambda s: "\r" not in s and "\n" not in s)


@given(names, names, st.text(max_size=20), st.sampled_from(["queue", "exchange"]),
       st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=5),
                                            st.integers(0, 9), max_size=3)))
def test_a_bindings_location_names_it(source, destination, key, kind, arguments):
    """What GET lists as a binding's location is what DELETE reads back, its arguments
    named by their hash (empty for none)."""
    location = m.binding_location(source, kind, destination, key, arguments)
    read = op("DELETE", location)
    assert (read.name, read.destination_kind, read.destination, read.key) == \
        (source, kind, destination, key)
    assert read.args_hash == m.args_hash(arguments)
    assert (read.args_hash == "") == (not arguments)


def test_the_response_as_a_client_reads_it():
    body = m.queue_value("q", "/", durable=True, auto_delete=False, exclusive=False,
                         queue_type="quorum", arguments={"x-queue-type": "quorum"},
                         messages=3, consumers=1, leader="amqpbroker@localhost",
                         replicas=["amqpbroker@localhost"])
    reply = Message()
    reply.decode(m.response(("utf8", "req-1"), 200, body))
    assert (reply.subject, reply.correlation_id) == ("200", "req-1")
    assert reply.properties == {"http:response": "1.1"}
    assert reply.body["message_count"] == 3 and reply.body["type"] == "quorum"
    assert list(reply.body["replicas"]) == ["amqpbroker@localhost"]
    assert reply.body["arguments"] == {"x-queue-type": "quorum"}
    error = Message()
    error.decode(m.error_response(types.NULL, m.HttpError(404, "queue 'q' not found")))
    assert (error.subject, error.body) == ("404", "queue 'q' not found")
