"""What RabbitMQ 4's AMQP 1.0 clients use, driven by RabbitMQ's own AMQP 1.0 client library
(``rabbitmq-amqp-python-client``), in both process layouts: the management node
(``/management``, amqpbroker/amqp10/management.py) -- queues, exchanges and bindings
declared, read, purged and deleted through it, with the statuses and texts RabbitMQ 4.2's
node answers (``rabbit_amqp_management.erl``), the link pair's rules, the broker's
permissions; a stream's filters (4.1: filter values, property filters); the open, a
refused vhost, an operator's close.

Every wait is on a client call (the library's requests block until answered).
"""
from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import pika
import pytest
from proton import Message as ProtonMessage
from proton.utils import BlockingConnection, ConnectionClosed, LinkDetached
from rabbitmq_amqp_python_client import (
    AddressHelper, AMQPMessagingHandler, ClassicQueueSpecification, Converter, Environment, ExchangeSpecification,
    ExchangeToExchangeBindingSpecification, ExchangeToQueueBindingSpecification, Message,
    MessageProperties, OffsetSpecification, QueueType, QuorumQueueSpecification,
    StreamConsumerOptions, StreamFilterOptions, StreamSpecification, ValidationCodeException)
from rabbitmq_amqp_python_client.qpid.proton import ConnectionException

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.amqp10_clients import settle_modified

pytestmark = pytest.mark.own_layout         # every broker here names its layout
TIMEOUT = 10


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("amqp10mgmt"), *LAYOUTS[request.param],
                       management=True) as b:
        yield b


def url(broker, user="guest", password="guest", vhost="") -> str:
    return f"amqp://{user}:{password}@{broker.host}:{broker.port}/{vhost}"


@pytest.fixture
def connect(broker):
    envs = []

    def make(user="guest", password="guest"):
        env = Environment(uri=url(broker, user, password))
        envs.append(env)
        conn = env.connection()
        conn.dial()
        return conn
    yield make
    for env in envs:
        env.close()


@pytest.fixture
def mgmt(connect):
    m = connect().management()
    yield m
    m.close()


@pytest.fixture
def names(request):
    counter = iter(range(1000))
    base = re.sub(r"[^A-Za-z0-9_-]", "", request.node.name)[-40:]
    return lambda prefix="q": f"{prefix}-{base}-{next(counter)}"


@pytest.fixture
def ch(broker):
    """An AMQP 0-9-1 channel whose publishes return once the broker has them."""
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
    channel = conn.channel()
    channel.confirm_delivery()
    yield channel
    conn.close()


def status_of(call) -> str:
    with pytest.raises(ValidationCodeException) as err:
        call()
    return str(err.value)


def api(broker, method: str, path: str, body=None):
    req = urllib.request.Request(
        f"http://{broker.host}:{broker.management_port}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"})
    mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    mgr.add_password(None, req.full_url, "guest", "guest")
    with urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(mgr)).open(
            req, timeout=TIMEOUT) as resp:
        return resp.status


def test_the_open_says_rabbitmq_4_and_names_the_broker(connect):
    """RabbitMQ's 4.x client libraries refuse a server whose open says another product or
    a version below 4.0.0, and ask 4.1's stream filters of 4.1 only, 4.2's SQL filters of
    4.2 only; the broker's own name rides along."""
    props = connect()._conn.conn.remote_properties
    assert props["product"] == "RabbitMQ" and props["version"] == "4.2.0"
    assert props["amqpbroker-version"]
    assert props["information"].startswith("amqpbroker ")


def test_declare_read_and_delete_queues_of_every_type(mgmt, ch, names):
    quorum, classic, stream = names("qq"), names("cq"), names("sq")
    mgmt.declare_queue(QuorumQueueSpecification(name=quorum, max_len=100))
    mgmt.declare_queue(ClassicQueueSpecification(name=classic, is_durable=False,
                                                 max_priority=5))
    mgmt.declare_queue(StreamSpecification(name=stream, max_len_bytes=10_000_000))
    info = mgmt.queue_info(quorum)
    assert (info.name, info.queue_type, info.is_durable, info.is_exclusive,
            info.is_auto_delete) == (quorum, QueueType.quorum, True, False, False)
    assert info.arguments == {"x-queue-type": "quorum", "x-max-length": 100}
    assert info.leader == "amqpbroker@localhost" and list(info.members) == [info.leader]
    assert (info.message_count, info.consumer_count) == (0, 0)
    info = mgmt.queue_info(classic)
    assert (info.queue_type, info.is_durable) == (QueueType.classic, False)
    assert info.arguments["x-max-priority"] == 5
    assert mgmt.queue_info(stream).queue_type == QueueType.stream
    # what AMQP 0-9-1 clients see is the same queue
    assert ch.queue_declare(quorum, durable=True, passive=True).method.queue == quorum
    ch.basic_publish("", quorum, b"one")
    ch.basic_publish("", quorum, b"two")
    assert mgmt.queue_info(quorum).message_count == 2
    for q in (quorum, classic, stream):
        mgmt.delete_queue(q)
    assert "404" in status_of(lambda: mgmt.queue_info(quorum))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare(classic, passive=True)


def test_a_redeclare_is_200_and_a_different_one_409(mgmt, names):
    """201 when created (the library takes 200, 201 and 409 alike: the status is what the
    raw request below reads), 200 when it existed and is equivalent, 409 with RabbitMQ's
    text when it differs."""
    q = names()
    created = mgmt.request({"durable": True, "arguments": {"x-queue-type": "quorum"}},
                           AddressHelper.queue_address(q), "PUT", [201])
    assert created.body["name"] == q and created.body["type"] == "quorum"
    again = mgmt.request({"durable": True, "arguments": {"x-queue-type": "quorum"}},
                         AddressHelper.queue_address(q), "PUT", [200])
    assert again.body["type"] == "quorum"
    # the library turns a 409 into this exception whatever the request expected
    assert status_of(lambda: mgmt.declare_queue(ClassicQueueSpecification(name=q))) == \
        "'ErrPreconditionFailed'"
    assert mgmt.queue_info(q).queue_type == QueueType.quorum
    mgmt.delete_queue(q)


def test_exchanges_bindings_publish_purge_and_unbind(connect, mgmt, ch, names):
    ex, dest_ex, q = names("ex"), names("ex2"), names()
    mgmt.declare_exchange(ExchangeSpecification(name=ex))
    mgmt.declare_exchange(ExchangeSpecification(name=dest_ex))
    mgmt.declare_queue(QuorumQueueSpecification(name=q))
    to_queue = mgmt.bind(ExchangeToQueueBindingSpecification(
        source_exchange=ex, destination_queue=q, binding_key="orders"))
    assert to_queue == f"/bindings/src={ex};dstq={q};key=orders;args="
    mgmt.bind(ExchangeToExchangeBindingSpecification(
        source_exchange=ex, destination_exchange=dest_ex, binding_key="orders"))
    publisher = connect().publisher(AddressHelper.exchange_address(ex, "orders"))
    for i in range(3):
        publisher.publish(Message(body=Converter.string_to_bytes(f"m{i}")))
    publisher.close()
    assert mgmt.queue_info(q).message_count == 3
    assert mgmt.purge_queue(q) == 3
    assert mgmt.queue_info(q).message_count == 0
    mgmt.unbind(to_queue)
    ch.basic_publish(ex, "orders", b"after unbind")
    assert mgmt.queue_info(q).message_count == 0
    mgmt.delete_exchange(ex)
    mgmt.delete_exchange(dest_ex)
    mgmt.delete_queue(q)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.exchange_declare(ex, passive=True)


def test_a_binding_with_arguments_is_named_by_its_location(mgmt, names):
    """GET /bindings lists the bindings between two names with a key; each one's
    ``location`` (its arguments named by a hash) is what DELETE takes."""
    ex, q = names("ex"), names()
    mgmt.declare_exchange(ExchangeSpecification(name=ex))
    mgmt.declare_queue(ClassicQueueSpecification(name=q))
    mgmt.bind(ExchangeToQueueBindingSpecification(source_exchange=ex, destination_queue=q,
                                                  binding_key="k"))
    mgmt.request({"source": ex, "destination_queue": q, "binding_key": "k",
                  "arguments": {"x-match": "any", "region": "eu"}}, "/bindings", "POST", [204])
    listed = mgmt.request(None, f"/bindings?src={ex}&dstq={q}&key=k", "GET", [200]).body
    assert sorted(b["arguments"].get("region", "") for b in listed) == ["", "eu"]
    with_args = next(b for b in listed if b["arguments"])
    assert with_args["location"].startswith(f"/bindings/src={ex};dstq={q};key=k;args=")
    assert with_args["location"] != f"/bindings/src={ex};dstq={q};key=k;args="
    mgmt.unbind(with_args["location"])
    left = mgmt.request(None, f"/bindings?src={ex}&dstq={q}&key=k", "GET", [200]).body
    assert [b["arguments"] for b in left] == [{}]
    # a binding that is not there: 204 all the same, as RabbitMQ
    mgmt.unbind(with_args["location"])
    mgmt.delete_exchange(ex)
    mgmt.delete_queue(q)


def test_names_are_percent_encoded(mgmt, ch):
    q = "orders/eu west ü"
    mgmt.declare_queue(ClassicQueueSpecification(name=q))
    assert mgmt.queue_info(q).name == q
    assert ch.queue_declare(q, passive=True).method.queue == q
    mgmt.delete_queue(q)


def test_refusals_have_rabbitmqs_statuses_and_texts(mgmt, names):
    q = names()
    answer = lambda body, path, method, code: mgmt.request(        # noqa: E731
        body, path, method, [code]).body
    assert answer({}, "/queues/amq.mine", "PUT", 403) == \
        "queue 'amq.mine' starts with reserved prefix 'amq.'"
    assert answer({}, "/exchanges/amq.mine", "PUT", 403) == \
        "exchange 'amq.mine' starts with reserved prefix 'amq.'"
    assert answer({}, "/exchanges/amq.direct", "PUT", 204) is None   # it exists: redeclared
    assert answer({}, "/exchanges/", "PUT", 403) == \
        "operation not permitted on the default exchange"
    assert answer({}, "/queues/", "PUT", 400) == "declare queue with empty name not allowed"
    assert answer({"type": "no-such-type"}, "/exchanges/x-unknown", "PUT", 400) == \
        "unknown exchange type 'no-such-type'"
    assert answer({"durable": "yes"}, f"/queues/{q}", "PUT", 400).startswith(
        "bad queue property")
    assert answer(None, f"/queues/{q}", "GET", 404) == f"queue '{q}' in vhost '/' not found"
    assert answer(None, f"/queues/{q}/messages", "DELETE", 404) == \
        f"no queue '{q}' in vhost '/'"
    assert answer({"source": "", "destination_queue": q, "binding_key": "", "arguments": {}},
                  "/bindings", "POST", 403) == "operation not permitted on the default exchange"
    assert answer({"source": "amq.direct", "destination_queue": q, "binding_key": "",
                   "arguments": {}}, "/bindings", "POST", 400) == f"no queue '{q}' in vhost '/'"
    assert answer(None, "/bindings/nonsense", "DELETE", 400) == \
        "bad binding path segment 'nonsense'"
    assert answer(None, "/nowhere", "GET", 400) == "GET /nowhere: no such request"
    # deleting what is not there is fine, as RabbitMQ 4
    assert answer(None, f"/queues/{q}", "DELETE", 200) == {"message_count": 0}
    assert answer(None, "/exchanges/never-declared", "DELETE", 204) is None
    # and the link pair still answers
    mgmt.declare_queue(ClassicQueueSpecification(name=q))
    mgmt.delete_queue(q)


def test_permissions_are_the_brokers(broker, connect, names):
    """A user who may not configure a name is refused (403, with RabbitMQ's text)."""
    user = names("user")
    assert api(broker, "PUT", f"users/{user}", {"password": "pw", "tags": ""}) in (201, 204)
    assert api(broker, "PUT", f"permissions/%2F/{user}",
               {"configure": "^mine-", "write": ".*", "read": ".*"}) in (201, 204)
    try:
        m = connect(user, "pw").management()
        m.declare_queue(ClassicQueueSpecification(name="mine-1"))
        refused = m.request({}, "/queues/theirs-1", "PUT", [403]).body
        assert refused == (f"access to queue 'theirs-1' in vhost '/' refused for user "
                           f"'{user}'")
        m.delete_queue("mine-1")
        m.close()
    finally:
        api(broker, "DELETE", f"users/{user}")


def test_an_exclusive_queue_belongs_to_the_connection(connect, ch, names):
    q = names()
    conn = connect()
    m = conn.management()
    m.declare_queue(ClassicQueueSpecification(name=q, is_exclusive=True, is_durable=False))
    assert m.queue_info(q).is_exclusive
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare(q, passive=True)
    assert err.value.reply_code == 405
    m.close()
    conn.close()
    other = pika.BlockingConnection(pika.ConnectionParameters(ch.connection._impl.params.host,
                                                              ch.connection._impl.params.port))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            other.channel().queue_declare(q, passive=True)
        assert err.value.reply_code == 404
    finally:
        other.close()


def test_a_link_to_the_node_must_be_one_of_a_pair(broker, ch, names):
    """Without the link property ``paired: true`` the attach is refused, as RabbitMQ's;
    the connection goes on."""
    q = names()
    ch.queue_declare(q)
    c = BlockingConnection(url(broker), timeout=TIMEOUT, allowed_mechs="PLAIN")
    try:
        with pytest.raises(LinkDetached) as err:
            c.create_sender("/management")
        assert "amqp:precondition-failed" in str(err.value)
        assert "paired: true" in str(err.value)
        c.create_sender(f"/queues/{q}").send(ProtonMessage(body="still here"))
        assert ch.queue_declare(q, passive=True).method.message_count == 1
    finally:
        c.close()
        ch.queue_delete(q)


def test_an_unknown_vhost_closes_the_socket_without_frames(broker):
    """RabbitMQ 4 refuses an open for a vhost that does not exist by closing the socket
    (a close frame would make the library's recovery reconnect at once, in a loop)."""
    env = Environment(uri=url(broker, vhost="no-such-vhost"))
    with pytest.raises(ConnectionException):
        env.connection().dial()
    # (no env.close(): the library keeps the connection that never opened and fails on it)


def test_a_connection_closed_by_an_operator_gets_one_close(broker, ch, names):
    """Closed through the management API: one ``close`` with RabbitMQ 4's condition and
    words, no link detached before it (the library recovers from a closed connection, not
    from a detached link)."""
    q = names()
    ch.queue_declare(q)
    c = BlockingConnection(url(broker), timeout=TIMEOUT, allowed_mechs="PLAIN",
                           container_id=q)
    try:
        sender = c.create_sender(f"/queues/{q}")
        sender.send(ProtonMessage(body="before"))
        mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        base = f"http://{broker.host}:{broker.management_port}/api/"
        mgr.add_password(None, base, "guest", "guest")
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(mgr))
        with opener.open(base + "connections", timeout=TIMEOUT) as resp:
            [name] = [o["name"] for o in json.load(resp) if o["protocol"] == "AMQP 1-0"
                      and o["client_properties"].get("container_id") == q]
        assert api(broker, "DELETE", "connections/" + urllib.parse.quote(name, safe="")) \
            == 204
        with pytest.raises(ConnectionClosed) as err:
            sender.send(ProtonMessage(body="after"))
        assert "amqp:internal-error" in str(err.value)
        assert 'Connection forced: "Closed via management plugin"' in str(err.value)
    finally:
        try:
            c.close()
        except Exception:                           # noqa: BLE001 - already closed
            pass
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    ch.queue_delete(q)


SECRET = b"a shared secret of thirty-two bytes!"


def hs256(scope: str, seconds: float = 60) -> str:
    import time

    import jwt
    return jwt.encode({"client_id": "svc", "aud": "rabbitmq", "scope": scope,
                       "exp": int(time.time() + seconds)}, SECRET, algorithm="HS256",
                      headers={"kid": "hs"})


@pytest.fixture(params=sorted(LAYOUTS))
def oauth_broker(request, tmp_path):
    """A broker that takes OAuth 2 tokens signed with ``SECRET`` (HS256)."""
    import base64
    (tmp_path / "hs.json").write_text(json.dumps({
        "kty": "oct", "kid": "hs", "alg": "HS256",
        "k": base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()}))
    with BrokerProcess(tmp_path / "data", *LAYOUTS[request.param], "--auth-backends",
                       "internal,oauth2", "--oauth2-signing-keys",
                       f"hs={tmp_path / 'hs.json'}") as b:
        yield b


ALL = "rabbitmq.configure:*/* rabbitmq.read:*/* rabbitmq.write:*/*"


def test_a_token_is_refreshed_through_the_node(oauth_broker):
    """OAuth 2: ``PUT /auth/tokens`` gives the connection a new token (its AMQP
    connection's update-secret): what the old one did not grant, the new one does."""
    from rabbitmq_amqp_python_client import OAuth2Options
    b = oauth_broker
    env = Environment(uri=f"amqp://{b.host}:{b.port}", oauth2_options=OAuth2Options(
        token=hs256("rabbitmq.configure:*/first.* rabbitmq.read:*/* rabbitmq.write:*/*")))
    conn = env.connection()
    conn.dial()
    m = conn.management()
    m.declare_queue(ClassicQueueSpecification(name="first.q"))
    assert m.request({}, "/queues/second.q", "PUT", [403]).body == \
        "access to queue 'second.q' in vhost '/' refused for user 'svc'"
    m.request(hs256(ALL).encode(), "/auth/tokens", "PUT", [204])
    m.declare_queue(ClassicQueueSpecification(name="second.q"))
    m.delete_queue("second.q")
    m.delete_queue("first.q")
    m.close()
    env.close()


def test_a_connection_closes_when_its_token_expires(oauth_broker):
    """As RabbitMQ 4: ``amqp:unauthorized-access`` "credential expired", when the token's
    ``exp`` comes; a token refreshed before then moves it."""
    import time

    from rabbitmq_amqp_python_client import OAuth2Options, RecoveryConfiguration
    from rabbitmq_amqp_python_client.qpid.proton.utils import ConnectionClosed as Closed
    b = oauth_broker
    env = Environment(uri=f"amqp://{b.host}:{b.port}", oauth2_options=OAuth2Options(
        token=hs256(ALL, 2)), recovery_configuration=RecoveryConfiguration(
        active_recovery=False))
    conn = env.connection()
    conn.dial()
    refreshed = hs256(ALL, 4)
    conn.management().request(refreshed.encode(), "/auth/tokens", "PUT", [204])
    import jwt
    second_exp = jwt.decode(refreshed, options={"verify_signature": False})["exp"]
    with pytest.raises(Closed) as err:
        conn._conn.wait(lambda: False, timeout=TIMEOUT)     # until the broker closes it
    assert time.time() >= second_exp - 0.05         # the refreshed token's time
    assert "amqp:unauthorized-access" in str(err.value)
    assert "credential expired" in str(err.value)


class Done(Exception):
    pass


class Collect(AMQPMessagingHandler):
    """Accepts and keeps each message, until the one whose body is ``last``."""

    def __init__(self, last: str):
        super().__init__()
        self.got, self.last = [], last

    def on_message(self, event):
        self.delivery_context.accept(event)
        self.got.append(event.message)
        if Converter.bytes_to_string(event.message.body) == self.last:
            raise Done


def consume_stream(conn, stream: str, options: StreamConsumerOptions, last: str) -> list:
    """The stream's messages that ``options`` let through, read from its start up to the
    one whose body is ``last`` (what was published after it never comes: it is last)."""
    handler = Collect(last)
    consumer = conn.consumer(AddressHelper.queue_address(stream), message_handler=handler,
                             consumer_options=options)
    try:
        with pytest.raises(Done):
            consumer.run()
    finally:
        consumer.close()
    return [Converter.bytes_to_string(m.body) for m in handler.got], handler.got


def test_a_streams_filter_values(connect, mgmt, names):
    """RabbitMQ's stream filtering over AMQP 1.0: the publisher's message annotation
    ``x-stream-filter-value``, the consumer's ``rabbitmq:stream-filter`` values and
    ``rabbitmq:stream-match-unfiltered``; the annotation comes back as it was sent and is
    no application property."""
    stream = names("s")
    mgmt.declare_queue(StreamSpecification(name=stream))
    conn = connect()
    publisher = conn.publisher(AddressHelper.queue_address(stream))
    for body, value in (("a1", "apple"), ("b1", "banana"), ("n1", None), ("a2", "apple"),
                        ("n2", None)):
        annotations = {} if value is None else {"x-stream-filter-value": value}
        publisher.publish(Message(body=Converter.string_to_bytes(body),
                                  annotations=annotations))
    publisher.close()
    first = OffsetSpecification.first
    bodies, got = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(values=["apple"])),
        "a2")
    assert bodies == ["a1", "a2"]
    assert got[0].annotations["x-stream-filter-value"] == "apple"
    assert not got[0].application_properties
    bodies, _ = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(
            values=["banana"], match_unfiltered=True)), "n2")
    assert bodies == ["b1", "n1", "n2"]
    mgmt.delete_queue(stream)


def test_a_streams_property_filters(connect, mgmt, names):
    """RabbitMQ 4.1's ``amqp:properties-filter`` and ``amqp:application-properties-filter``:
    every entry must match; ``&p:`` a prefix, ``&s:`` a suffix."""
    stream = names("s")
    mgmt.declare_queue(StreamSpecification(name=stream))
    conn = connect()
    publisher = conn.publisher(AddressHelper.queue_address(stream))
    for i in range(8):
        publisher.publish(Message(body=Converter.string_to_bytes(f"m{i}"),
                                  subject=f"order.{i % 2}", group_id=f"g{i}",
                                  application_properties={"region": f"eu-{i % 3}"}))
    publisher.close()
    first = OffsetSpecification.first
    bodies, _ = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(
            message_properties=MessageProperties(subject="order.1", group_id="g3"))), "m3")
    assert bodies == ["m3"]
    bodies, _ = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(
            message_properties=MessageProperties(subject="&s:.0"),
            application_properties={"region": "&p:eu-1"})), "m4")
    assert bodies == ["m4"]
    bodies, _ = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(
            application_properties={"region": "eu-2"})), "m5")
    assert bodies == ["m2", "m5"]
    mgmt.delete_queue(stream)


def test_a_streams_sql_filter(broker, connect, mgmt, names):
    """RabbitMQ 4.2's ``amqp:sql-filter``: only the messages for which the expression is
    true; one that does not parse is left out of the attach's source (RabbitMQ's answer),
    a valid one is echoed."""
    stream = names("s")
    mgmt.declare_queue(StreamSpecification(name=stream))
    conn = connect()
    publisher = conn.publisher(AddressHelper.queue_address(stream))
    for i in range(6):
        publisher.publish(Message(body=Converter.string_to_bytes(f"m{i}"),
                                  subject=f"order.{'created' if i % 2 else 'paid'}",
                                  reply_to="r" if i < 4 else None, priority=i,
                                  application_properties={"price": 10 * i, "tag": f"t-{i}"}))
    publisher.close()
    first = OffsetSpecification.first
    sql = ("p.subject LIKE '%created' AND (price >= 20 OR tag = 't-1') "
           "AND p.reply_to IS NOT NULL")
    bodies, got = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(sql=sql)), "m3")
    assert bodies == ["m1", "m3"]
    bodies, _ = consume_stream(conn, stream, StreamConsumerOptions(
        offset_specification=first, filter_options=StreamFilterOptions(
            sql="h.priority > 3 AND [tag] NOT IN ('t-5')")), "m4")
    assert bodies == ["m4"]
    from proton import Described, symbol
    from proton.reactor import Filter

    def echoed(sql: str) -> dict:
        c = BlockingConnection(url(broker), timeout=TIMEOUT)
        try:
            receiver = c.create_receiver(f"/queues/{stream}", options=Filter({
                symbol("sql-filter"): Described(symbol("amqp:sql-filter"), sql)}))
            data = receiver.link.remote_source.filter
            data.rewind()
            return data.get_object() if data.next() else {}
        finally:
            c.close()
    assert symbol("sql-filter") in echoed("price > 10")
    assert echoed("price > ") == {} and echoed("m.x = 1") == {}
    mgmt.delete_queue(stream)


class Keep(AMQPMessagingHandler):
    """Keeps each message (pre-settled: nothing to settle) until ``n`` came."""

    def __init__(self, n: int):
        super().__init__()
        self.got, self.n = [], n

    def on_message(self, event):
        self.got.append(Converter.bytes_to_string(event.message.body))
        if len(self.got) == self.n:
            raise Done


def test_direct_reply_to(broker, connect, ch):
    """RabbitMQ 4.2's direct reply-to over AMQP 1.0: a receiver with a dynamic source and
    capability ``rabbitmq:volatile-queue`` is told its address; what another connection
    publishes there, over AMQP 1.0 (accepted) or AMQP 0-9-1 (routed, not returned),
    reaches it. A dynamic source without that capability is still refused."""
    from rabbitmq_amqp_python_client import ConsumerOptions, ConsumerSettleStrategy
    handler = Keep(4)
    consumer = connect().consumer(message_handler=handler, credit=100,
                                  consumer_options=ConsumerOptions(
                                      settle_strategy=ConsumerSettleStrategy.DirectReplyTo))
    addr = consumer.address
    assert re.fullmatch(r"/queues/amq\.rabbitmq\.reply-to\.\S+", addr), addr
    publisher = connect().publisher(addr)
    for i in range(3):
        assert publisher.publish(Message(body=Converter.string_to_bytes(f"r{i}"))) \
            .remote_state == 0x24                                   # accepted
    publisher.close()
    returned = []
    ch.add_on_return_callback(lambda *args: returned.append(args))
    ch.basic_publish("", addr.removeprefix("/queues/"), b"r3", mandatory=True)
    try:
        with pytest.raises(Done):
            consumer.run()
    finally:
        consumer.close()
    assert handler.got == ["r0", "r1", "r2", "r3"] and not returned
    from proton import symbol
    from proton.reactor import DynamicNodeProperties, ReceiverOption

    class Dynamic(ReceiverOption):
        def apply(self, receiver):
            receiver.source.dynamic = True
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    try:
        with pytest.raises(LinkDetached, match="amqp:not-implemented"):
            c.create_receiver(None, options=[Dynamic(), DynamicNodeProperties(
                {symbol("lifetime-policy"): symbol("delete-on-close")})])
    finally:
        c.close()


def test_v2_target_addresses(connect, mgmt, ch, names):
    """RabbitMQ 4's target addresses: ``/exchanges/NAME`` publishes with the empty routing
    key (not the subject, as 3.x's ``/exchange/NAME``); ``/queues/NAME`` must exist."""
    from rabbitmq_amqp_python_client.qpid.proton.utils import LinkDetached as Detached
    ex, empty_key, subject_key = names("ex"), names(), names()
    mgmt.declare_exchange(ExchangeSpecification(name=ex))
    for q, key in ((empty_key, ""), (subject_key, "by-subject")):
        mgmt.declare_queue(ClassicQueueSpecification(name=q))
        mgmt.bind(ExchangeToQueueBindingSpecification(source_exchange=ex,
                                                      destination_queue=q, binding_key=key))
    conn = connect()
    publisher = conn.publisher(AddressHelper.exchange_address(ex))
    publisher.publish(Message(body=b"m", subject="by-subject"))
    publisher.close()
    assert (mgmt.queue_info(empty_key).message_count,
            mgmt.queue_info(subject_key).message_count) == (1, 0)
    with pytest.raises(Detached) as err:
        conn.publisher(AddressHelper.queue_address(names("absent")))
    assert "amqp:not-found" in str(err.value) and "no queue" in str(err.value)
    for q in (empty_key, subject_key):
        mgmt.delete_queue(q)
    mgmt.delete_exchange(ex)


def test_a_message_to_nowhere_is_refused_not_its_link(connect, mgmt, names):
    """A link without a target (each message's ``to``): a message whose ``to`` names an
    exchange that does not exist is rejected with RabbitMQ 4's words; the link goes on
    (publishing it would have closed the link's channel, and the link with it)."""
    from rabbitmq_amqp_python_client import AmqpMessageRejectedException as Rejected
    q = names()
    mgmt.declare_queue(ClassicQueueSpecification(name=q))
    publisher = connect().publisher()

    def send(to):
        return publisher.publish(AddressHelper.message_to_address_helper(
            Message(body=b"m"), to))
    with pytest.raises(Rejected, match="no exchange 'no-such-exchange' in vhost '/'"):
        send(AddressHelper.exchange_address("no-such-exchange", "k"))
    # (a message without a `to`, or one of no known form, the library refuses to send:
    # tests/unit/test_amqp10_address.py has the words the broker answers them with)
    assert send(AddressHelper.queue_address(q)).remote_state == 0x24       # accepted
    assert mgmt.queue_info(q).message_count == 1
    publisher.close()
    mgmt.delete_queue(q)


def test_a_message_routed_nowhere_is_released(broker, connect, mgmt, names):
    """RabbitMQ 4 settles an unsettled message that reached no queue ``released`` on its
    targets (``/exchanges/...``, ``/queues/...``, ``to``); RabbitMQ 3.10's plugin and its
    addresses (``/exchange/...``) accept it, as here."""
    ex, q = names("ex"), names()
    mgmt.declare_exchange(ExchangeSpecification(name=ex))
    mgmt.declare_queue(ClassicQueueSpecification(name=q))
    mgmt.bind(ExchangeToQueueBindingSpecification(source_exchange=ex, destination_queue=q,
                                                  binding_key="bound"))
    from rabbitmq_amqp_python_client.qpid.proton.utils import SendException

    def outcome(publisher, message) -> int:
        try:
            return publisher.publish(message).remote_state
        except SendException as exc:        # the library raises on released
            return exc.state
    publisher = connect().publisher(AddressHelper.exchange_address(ex, "unbound"))
    outcomes = [outcome(publisher, Message(body=b"m")) for _ in range(3)]
    publisher.close()
    publisher = connect().publisher()
    for key in ("bound", "unbound", "bound"):
        outcomes.append(outcome(publisher, AddressHelper.message_to_address_helper(
            Message(body=b"m"), AddressHelper.exchange_address(ex, key))))
    publisher.close()
    assert outcomes == [0x26] * 3 + [0x24, 0x26, 0x24]          # released, accepted
    assert mgmt.queue_info(q).message_count == 2
    c = BlockingConnection(url(broker), timeout=TIMEOUT, allowed_mechs="PLAIN")
    try:
        c.create_sender(f"/exchange/{ex}/unbound").send(ProtonMessage(body="3.10's"))
    finally:                                # accepted: send raises on released
        c.close()
    mgmt.delete_queue(q)
    mgmt.delete_exchange(ex)



# ------------------------------------------------------------------ the modified outcome
def test_modified_annotations_go_with_a_quorum_queues_message(broker, mgmt, ch, names):
    """RabbitMQ 4's modified outcome on a quorum queue: requeued with the consumer's
    annotations (merged into those it had, a key set again replaced), dead-lettered with them
    (``undeliverable-here``); an AMQP 1.0 consumer reads them as message annotations, an
    AMQP 0-9-1 one as headers -- whether the message came over AMQP 1.0 or 0-9-1."""
    from proton import symbol
    q, dlq = names(), names("dlq")
    mgmt.declare_queue(QuorumQueueSpecification(name=dlq))
    mgmt.declare_queue(QuorumQueueSpecification(name=q, dead_letter_exchange="",
                                                 dead_letter_routing_key=dlq))
    ch.basic_publish("", q, b"from-0-9-1", pika.BasicProperties(headers={"h": "v"}))
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    try:
        c.create_sender(f"/queues/{q}").send(ProtonMessage(
            body=b"from-1.0", annotations={symbol("x-opt-before"): "b"},
            properties={"k": 1}))
        receiver = c.create_receiver(f"/queues/{q}", credit=10)
        first = []
        for _ in range(2):
            first.append(receiver.receive(TIMEOUT))
            settle_modified(receiver, {symbol("x-opt-reason"): "retry",
                                       symbol("x-opt-attempt"): 1})
        again = []
        for _ in range(2):
            again.append(receiver.receive(TIMEOUT))
            settle_modified(receiver, {symbol("x-opt-reason"): "gave up"}, undeliverable=True)
        dead = c.create_receiver(f"/queues/{dlq}", credit=10)
        lettered = []
        for _ in range(2):
            lettered.append(dead.receive(TIMEOUT))
            dead.accept()
    finally:
        c.close()

    def annotations(m) -> dict:
        return {str(k): v for k, v in (m.annotations or {}).items()}
    assert [bytes(m.body) for m in first] == [b"from-0-9-1", b"from-1.0"]
    assert annotations(first[0]) == {} and annotations(first[1]) == {"x-opt-before": "b"}
    assert [bytes(m.body) for m in again] == [b"from-0-9-1", b"from-1.0"]
    assert annotations(again[0]) == {"x-opt-reason": "retry", "x-opt-attempt": 1}
    assert annotations(again[1]) == {"x-opt-before": "b", "x-opt-reason": "retry",
                                     "x-opt-attempt": 1}
    # an annotation is no application property; the ones the message had stay as they were
    assert "x-opt-reason" not in again[0].properties and again[0].properties["h"] == "v"
    assert again[1].properties == {"k": 1}
    assert annotations(lettered[0]) == {"x-opt-reason": "gave up", "x-opt-attempt": 1}
    assert annotations(lettered[1]) == {"x-opt-before": "b", "x-opt-reason": "gave up",
                                        "x-opt-attempt": 1}
    # over AMQP 0-9-1: the annotations as headers, besides the dead letter's x-death
    ch.basic_publish("", q, b"third", pika.BasicProperties(delivery_mode=2))
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    try:
        receiver = c.create_receiver(f"/queues/{q}", credit=1)
        assert bytes(receiver.receive(TIMEOUT).body) == b"third"
        settle_modified(receiver, {symbol("x-opt-flag"): True, symbol("x-opt-code"): 7,
                                   symbol("x-opt-text"): "t"}, undeliverable=True)
    finally:
        c.close()
    # dead-lettering is asynchronous: wait for it as a consumer does
    method, props, body = next(ch.consume(dlq, auto_ack=True, inactivity_timeout=TIMEOUT))
    ch.cancel()
    assert body == b"third"
    headers = props.headers
    assert (headers["x-opt-flag"], headers["x-opt-code"], headers["x-opt-text"]) == \
        (True, 7, b"t" if isinstance(headers["x-opt-text"], bytes) else "t")
    assert headers["x-death"][0]["reason"] == "rejected" and headers["x-death"][0]["queue"] == q
    mgmt.delete_queue(q)
    mgmt.delete_queue(dlq)


def test_a_quorum_queues_count_of_returns_is_the_headers_delivery_count(broker, mgmt, ch,
                                                                        names):
    """A message a quorum queue delivers again carries its count of returns as the header's
    delivery-count for an AMQP 1.0 consumer (no application property ``x-delivery-count``:
    that is the header an AMQP 0-9-1 consumer reads it in), whether it came over AMQP 1.0 or
    AMQP 0-9-1, and whatever returned it (modified, released)."""
    q = names()
    mgmt.declare_queue(QuorumQueueSpecification(name=q))
    ch.basic_publish("", q, b"from-0-9-1", pika.BasicProperties(headers={"h": "v"}))
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    try:
        c.create_sender(f"/queues/{q}").send(ProtonMessage(body=b"from-1.0",
                                                           properties={"k": 1}))
        receiver = c.create_receiver(f"/queues/{q}", credit=10)
        seen = []
        for _ in range(8):              # each message delivered four times: 0 to 3 returns
            m = receiver.receive(TIMEOUT)
            seen.append((bytes(m.body), m.delivery_count, m.first_acquirer, m.properties))
            if len(seen) <= 4:
                settle_modified(receiver, {})
            elif len(seen) <= 6:
                receiver.release(delivered=False)                   # released
            else:
                receiver.accept()       # (a message in flight when the link closes would
                                        # count one more return: none is)
    finally:
        c.close()
    assert [(b, n, first) for b, n, first, _ in seen] == [
        (b"from-0-9-1", 0, True), (b"from-1.0", 0, True), (b"from-0-9-1", 1, False),
        (b"from-1.0", 1, False), (b"from-0-9-1", 2, False), (b"from-1.0", 2, False),
        (b"from-0-9-1", 3, False), (b"from-1.0", 3, False)]
    assert all("x-delivery-count" not in props for *_, props in seen)
    assert seen[-2][3] == {"h": "v"} and seen[-1][3] == {"k": 1}
    mgmt.delete_queue(q)


def test_modified_annotations_are_not_kept_by_a_classic_queue(broker, mgmt, ch, names):
    """As in RabbitMQ 4: a classic queue requeues (or dead-letters) a message settled
    ``modified``, without the annotations."""
    from proton import symbol
    q = names()
    mgmt.declare_queue(ClassicQueueSpecification(name=q))
    ch.basic_publish("", q, b"m")
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    try:
        receiver = c.create_receiver(f"/queues/{q}", credit=1)
        assert bytes(receiver.receive(TIMEOUT).body) == b"m"
        settle_modified(receiver, {symbol("x-opt-reason"): "retry"})
        again = receiver.receive(TIMEOUT)
        receiver.accept()
    finally:
        c.close()
    assert bytes(again.body) == b"m" and not again.annotations
    assert again.first_acquirer is False            # redelivered
    mgmt.delete_queue(q)


def test_a_modified_outcome_may_set_only_x_annotations(broker, mgmt, ch, names):
    """AMQP 1.0 reserves message annotation keys that do not begin with ``x-``: a modified
    outcome setting one closes the connection with ``amqp:invalid-field``; the message goes
    back to the queue, as any unsettled one of a closed connection."""
    from proton import symbol
    q = names()
    mgmt.declare_queue(QuorumQueueSpecification(name=q))
    ch.basic_publish("", q, b"m")
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    receiver = c.create_receiver(f"/queues/{q}", credit=1)
    assert bytes(receiver.receive(TIMEOUT).body) == b"m"
    settle_modified(receiver, {symbol("reserved"): "no"})
    with pytest.raises(ConnectionClosed, match="amqp:invalid-field.*'reserved'"):
        c.wait(lambda: False, timeout=TIMEOUT, msg="the broker's close")
    c.close()
    # back in the queue once the broker has closed the connection's channel
    method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=TIMEOUT))
    ch.cancel()
    assert body == b"m" and method.redelivered and "reserved" not in (props.headers or {})
    mgmt.delete_queue(q)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_modified_annotations_survive_a_restart(tmp_path, layout, how):
    """A quorum queue keeps a ``modified`` outcome's annotations on disk with the message
    (``modified.log``, fsynced in the commit round that writes the return), so the message
    comes back with them after a clean stop or a crash once settled; acked, they are gone
    from the file at the next start."""
    from proton import symbol
    with BrokerProcess(tmp_path / "data", *LAYOUTS[layout]) as b:
        conn = pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("kept", durable=True, arguments={"x-queue-type": "quorum"})
        ch.basic_publish("", "kept", b"a", pika.BasicProperties(delivery_mode=2))
        conn.close()
        c = BlockingConnection(url(b), timeout=TIMEOUT)
        try:
            receiver = c.create_receiver("/queues/kept", credit=1)
            for reason in ("first", "second"):
                assert bytes(receiver.receive(TIMEOUT).body) == b"a"
                settle_modified(receiver, {symbol("x-opt-reason"): reason})
            # the queue took the second return before it delivered "a" again
            assert bytes(receiver.receive(TIMEOUT).body) == b"a"
            receiver.release(delivered=False)
        finally:
            c.close()
        # a publish confirmed after that: its commit round wrote what the queue held (a
        # round flushes and fsyncs every queue changed before it)
        conn = pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", "kept", b"c", pika.BasicProperties(delivery_mode=2))
        conn.close()
        b.stop() if how == "sigterm" else b.kill()
        b.start()
        c = BlockingConnection(url(b), timeout=TIMEOUT)
        try:
            receiver = c.create_receiver("/queues/kept", credit=2)
            got = [receiver.receive(TIMEOUT) for _ in range(2)]
            for _ in got:
                receiver.accept()
        finally:
            c.close()
        assert [(bytes(m.body), {str(k): v for k, v in (m.annotations or {}).items()})
                for m in got] == [(b"a", {"x-opt-reason": "second"}), (b"c", {})]


def test_annotations_too_big_for_a_frame_leave_the_message_as_it_was(broker, mgmt, ch, names):
    """Annotations that would make the message's properties more than an AMQP 0-9-1 frame
    holds (each fits an AMQP 1.0 frame, both do not) are not kept (logged): the message is
    requeued as it was, the connection goes on."""
    from proton import symbol
    q = names()
    mgmt.declare_queue(QuorumQueueSpecification(name=q))
    ch.basic_publish("", q, b"m", pika.BasicProperties(headers={"pad": "p" * 60_000}))
    c = BlockingConnection(url(broker), timeout=TIMEOUT)
    try:
        receiver = c.create_receiver(f"/queues/{q}", credit=1)
        assert bytes(receiver.receive(TIMEOUT).body) == b"m"
        settle_modified(receiver, {symbol("x-opt-big"): "x" * 100_000,
                                   symbol("x-opt-small"): "s"})
        again = receiver.receive(TIMEOUT)
        receiver.accept()
    finally:
        c.close()
    assert bytes(again.body) == b"m" and not again.annotations and again.delivery_count == 1
    mgmt.delete_queue(q)
