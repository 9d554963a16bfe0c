"""STOMP 1.0-1.2 (``--stomp-port``, ``--web-stomp-port``; amqpbroker/stomp), as RabbitMQ
3.10's rabbitmq_stomp and rabbitmq_web_stomp plugins serve it, in both process layouts:
stomp.py clients, pika on the AMQP side, and raw sockets where a test needs to misbehave.

RabbitMQ's own suite for its plugin runs with ``interop/stomp_suite/run.py``; these tests
are ours. Every wait is on a client's callback queue or a socket read with a timeout.
"""
from __future__ import annotations

import queue
import socket
import time

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess
from amqpbroker.testing.closing import closing_clients
from amqpbroker.testing.leaks import wait_until
from amqpbroker.testing.stomp_clients import TIMEOUT, Client, Raw

pytestmark = pytest.mark.own_layout         # every broker here names its layout


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def broker(request, tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("stomp"), *LAYOUTS[request.param],
                       "--stomp-port", "-1", "--web-stomp-port", "-1", management=True) as b:
        yield b


def at(broker) -> tuple:
    return broker.host, broker.stomp_port


@pytest.fixture
def clients(broker):
    with closing_clients(lambda **kw: Client(at(broker), **kw)) as make:
        yield make


@pytest.fixture
def amqp(broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.port))
    yield conn.channel()
    conn.close()


def queue_empties(broker, name: str) -> bool:
    """The queue's ``messages`` reaches 0 (the management API's view: nothing announces it)."""
    return wait_until(lambda: broker.api(f"queues/%2F/{name}").get("messages") == 0,
                      TIMEOUT, f"{name} to empty")


def no_more(q: queue.Queue, wait: float = 0.3) -> bool:
    """Nothing else arrives (bounded wait: for what must NOT come)."""
    try:
        q.get(timeout=wait)
        return False
    except queue.Empty:
        return True


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_queue_send_and_client_ack_in_every_version(clients, broker, version):
    c = clients(version=version)
    dest = f"/queue/stomp-ack-{version}"
    if version == "1.0":
        c.c.subscribe(dest, id="s1", ack="client", receipt="r-sub")
        assert c.receipt() == "r-sub"
    else:
        c.subscribe(dest, "s1", ack="client-individual")
    c.c.send(dest, "hello", content_type="text/plain",
             headers={"persistent": "true", "x-custom": "v1", "receipt": "r-send"})
    assert c.receipt() == "r-send"           # confirmed by the broker
    m = c.message()
    assert m.body == "hello"
    assert m.headers["destination"] == dest
    assert m.headers["subscription"] == "s1"
    assert m.headers["persistent"] == "true"
    assert m.headers["x-custom"] == "v1"
    assert m.headers["content-type"] == "text/plain"
    assert m.headers["redelivered"] == "false"
    assert m.headers["message-id"].startswith("T_s1@@session-")
    if version == "1.2":
        assert m.headers["ack"] == m.headers["message-id"]
        c.c.ack(m.headers["ack"])
    elif version == "1.1":
        c.c.ack(m.headers["message-id"], "s1")
    else:
        c.c.ack(m.headers["message-id"])
    assert queue_empties(broker, dest.rsplit("/", 1)[1])


def test_unacked_messages_come_back_redelivered_to_the_next_client(clients, broker):
    first = clients()
    first.subscribe("/queue/stomp-redeliver", "a", ack="client-individual")
    first.c.send("/queue/stomp-redeliver", "keep me")
    assert first.message().body == "keep me"
    first.close()                            # not acked: back to the queue
    second = clients()
    second.subscribe("/queue/stomp-redeliver", "b", ack="client-individual")
    m = second.message()
    assert (m.body, m.headers["redelivered"]) == ("keep me", "true")
    second.c.ack(m.headers["ack"])


def test_nack_requeues_or_drops(clients, broker):
    c = clients()
    c.subscribe("/queue/stomp-nack", "n", ack="client-individual")
    c.c.send("/queue/stomp-nack", "again")
    m = c.message()
    c.c.nack(m.headers["ack"])               # requeue: true by default
    m2 = c.message()
    assert (m2.body, m2.headers["redelivered"]) == ("again", "true")
    c.c.nack(m2.headers["ack"], requeue="false")
    assert no_more(c.messages)
    assert queue_empties(broker, "stomp-nack")


def test_client_ack_mode_acks_everything_up_to_the_message(clients, broker):
    c = clients()
    c.subscribe("/queue/stomp-multi", "m", ack="client", **{"prefetch-count": "10"})
    for i in range(5):
        c.c.send("/queue/stomp-multi", f"m{i}")
    got = [c.message() for _ in range(5)]
    assert [m.body for m in got] == [f"m{i}" for i in range(5)]
    c.c.ack(got[-1].headers["ack"])          # "client": multiple
    assert queue_empties(broker, "stomp-multi")


def test_prefetch_count_limits_unacked_deliveries(clients, broker):
    c = clients()
    c.subscribe("/queue/stomp-prefetch", "p", ack="client-individual",
                **{"prefetch-count": "2"})
    for i in range(5):
        c.c.send("/queue/stomp-prefetch", f"p{i}", receipt=f"r{i}")
    assert sorted(c.receipt() for _ in range(5)) == [f"r{i}" for i in range(5)]
    first = [c.message(), c.message()]
    assert no_more(c.messages)               # two unacked: no third
    c.c.ack(first[0].headers["ack"])
    assert c.message().body == "p2"


def test_topics_fan_out_and_meet_amqp_both_ways(clients, amqp):
    a, b = clients(), clients(version="1.1")
    a.subscribe("/topic/stomp.news.*", "ta")
    b.subscribe("/topic/stomp.news.sport", "tb")
    amqp.basic_publish("amq.topic", "stomp.news.sport", b"from amqp",
                       pika.BasicProperties(correlation_id="c-1", reply_to="replies",
                                            headers={"n": 7, "s": "x"}))
    for client in (a, b):
        m = client.message()
        assert m.body == "from amqp"
        assert m.headers["destination"] == "/topic/stomp.news.sport"
        assert m.headers["correlation-id"] == "c-1"
        assert m.headers["reply-to"] == "/reply-queue/replies"   # RabbitMQ's prefix
        assert (m.headers["n"], m.headers["s"]) == ("7", "x")
    q = amqp.queue_declare("", exclusive=True).method.queue
    amqp.queue_bind(q, "amq.topic", "stomp.out")
    a.c.send("/topic/stomp.out", "from stomp", headers={"priority": "3", "type": "t1",
                                                         "receipt": "r"})
    assert a.receipt() == "r"
    method, props, body = amqp.basic_get(q, auto_ack=True)
    assert body == b"from stomp"
    assert (props.priority, props.type, props.headers["receipt"]) == (3, "t1", "r")


def test_exchange_destinations_and_amq_queue(clients, amqp):
    c = clients()
    c.subscribe("/exchange/amq.direct/stomp-key", "ex")
    c.c.send("/exchange/amq.direct/stomp-key", "direct")
    m = c.message()
    assert (m.body, m.headers["destination"]) == ("direct", "/exchange/amq.direct/stomp-key")
    # a queue declared elsewhere with arguments is consumed as it is (not declared again)
    amqp.queue_declare("stomp-existing", arguments={"x-max-length": 100})
    c.subscribe("/amq/queue/stomp-existing", "aq")
    amqp.basic_publish("", "stomp-existing", b"existing")
    m = c.message()
    assert (m.body, m.headers["destination"]) == ("existing", "/queue/stomp-existing")


def test_temp_queue_reply_to_for_rpc(clients, amqp):
    amqp.queue_declare("stomp-rpc", durable=False)
    requester = clients()
    requester.c.send("/amq/queue/stomp-rpc", "2+2", headers={"reply-to": "/temp-queue/r1",
                                                            "correlation-id": "q1"},
                     receipt="asked")
    assert requester.receipt() == "asked"    # confirmed: in the queue
    method, props, body = amqp.basic_get("stomp-rpc", auto_ack=True)
    assert body == b"2+2" and props.reply_to.startswith("amq.gen-")
    amqp.basic_publish("", props.reply_to, b"4",
                       pika.BasicProperties(correlation_id=props.correlation_id))
    m = requester.message()
    assert (m.body, m.headers["subscription"], m.headers["correlation-id"]) == \
        ("4", "/temp-queue/r1", "q1")


def test_transactions_hold_sends_and_acks_until_commit(clients, broker):
    c = clients()
    c.subscribe("/queue/stomp-tx", "tx", ack="client-individual")
    c.c.begin("t1")
    c.c.send("/queue/stomp-tx", "in tx", transaction="t1")
    assert no_more(c.messages)
    c.c.commit("t1")
    m = c.message()
    assert m.body == "in tx"
    c.c.begin("t2")
    c.c.ack(m.headers["ack"], transaction="t2")
    c.c.send("/queue/stomp-tx", "aborted", transaction="t2")
    c.c.abort("t2")                          # neither the ack nor the send happen
    assert no_more(c.messages)
    c.c.send("/queue/stomp-tx", "x", transaction="nope")
    e = c.error()
    assert (e.headers["message"], e.body) == ("Bad transaction",
                                              'Invalid transaction identifier: "nope"\n')
    c.c.ack(m.headers["ack"])
    assert queue_empties(broker, "stomp-tx")


def test_durable_topic_subscription_keeps_messages_while_away(clients, broker):
    first = clients()
    first.subscribe("/topic/stomp.durable", "dur", durable="true", **{"auto-delete": "false"})
    first.close()
    sender = clients()
    sender.c.send("/topic/stomp.durable", "while away", receipt="r")
    assert sender.receipt() == "r"
    again = clients()
    again.subscribe("/topic/stomp.durable", "dur", durable="true", **{"auto-delete": "false"})
    assert again.message().body == "while away"
    names = [q["name"] for q in broker.api("queues")]
    durable = [n for n in names if n.startswith("stomp-subscription-")]
    assert len(durable) == 1
    again.c.unsubscribe("dur", headers={"durable": "true"}, receipt="u")
    assert again.receipt() == "u"
    assert durable[0] not in [q["name"] for q in broker.api("queues")]


def test_after_the_disconnect_receipt_nothing_goes_to_the_old_subscriber(broker, clients,
                                                                        amqp):
    """RabbitMQ closes the AMQP connection before it sends DISCONNECT's RECEIPT: a message
    published once the client has it stays in the queue (an auto-ack consumer still
    registered would take it and drop it with the connection). Twenty times over."""
    amqp.queue_declare("stomp-after-disconnect")
    amqp.confirm_delivery()
    for i in range(20):
        c = clients()
        c.subscribe("/amq/queue/stomp-after-disconnect", "s")
        c.close()                                   # DISCONNECT, and its RECEIPT
        amqp.basic_publish("", "stomp-after-disconnect", f"m{i}".encode())   # confirmed
        method, _, body = amqp.basic_get("stomp-after-disconnect", auto_ack=True)
        assert body == f"m{i}".encode(), i


def test_errors_are_rabbitmqs_and_the_connection_goes_on(clients):
    c = clients()
    cases = [
        (lambda: c.c.send("/something/interesting", "x"), "Unknown destination",
         "'/something/interesting' is not a valid destination.\nValid destination types "
         "are: /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n"),
        (lambda: c.c.send("/queue/bah/baz", "x"), "Invalid destination",
         "'/bah/baz' is not a valid queue destination\n"),
        (lambda: c.c.send("/exchange//foo", "x"), "Invalid destination",
         "'//foo' is not a valid exchange destination\n"),
        (lambda: c.c.send("/temp-queue/t", "x"), "Invalid destination",
         "'/temp-queue/t' is not a valid destination for 'SEND'\n"),
        (lambda: c.c.send_frame("SEND", {"destination": "a", "message-id": "1"}),
         "Invalid header", "'message-id' is not allowed on 'SEND'.\n"),
        (lambda: c.c.send_frame("SUBSCRIBE"), "Missing destination",
         "\"SUBSCRIBE\" must include a 'destination' header\n"),
        (lambda: c.c.send_frame("WRONGCOMMAND", {"destination": "a"}), "Bad command",
         'Could not interpret command "WRONGCOMMAND"\n'),
        (lambda: c.c.send_frame("ACK", {"id": "nonsense"}), "Invalid header",
         '"ACK" must include a valid "id" header\n'),
        (lambda: c.c.send_frame("BEGIN"), "Missing transaction",
         "\"BEGIN\" must include a 'transaction' header\n"),
        (lambda: c.c.unsubscribe("never"), "No subscription found",
         "UNSUBSCRIBE must refer to an existing subscription.\n"
         "Subscription to \"id='never'\" not found.\n"),
    ]
    for act, message, body in cases:
        act()
        e = c.error()
        assert (e.headers["message"], e.body) == (message, body)
    c.subscribe("/queue/stomp-still-fine", "ok")       # still connected and working
    c.c.send("/queue/stomp-still-fine", "yes")
    assert c.message().body == "yes"


def test_a_missing_exchange_closes_that_connection_only(clients):
    bad, good = clients(), clients()
    good.subscribe("/queue/stomp-unaffected", "g")
    bad.c.send("/exchange/stomp-no-such-exchange/k", "x")
    e = bad.error()
    assert (e.headers["message"], e.body) == (
        "not_found", "NOT_FOUND - no exchange 'stomp-no-such-exchange' in vhost '/'")
    assert bad.disconnected.get(timeout=TIMEOUT)
    good.c.send("/queue/stomp-unaffected", "fine")
    assert good.message().body == "fine"


def test_permissions_are_the_brokers(broker, clients):
    broker.request("PUT", "users/stomp-ro", {"password": "pw", "tags": ""})
    broker.request("PUT", "permissions/%2F/stomp-ro",
                   {"configure": "^stomp-ro-.*", "write": "^stomp-ro-.*", "read": ".*"})
    c = clients(login="stomp-ro", passcode="pw")
    c.c.send("/topic/anything", "x")         # amq.topic: no write permission
    e = c.error()
    assert e.headers["message"] == "access_refused"
    assert e.body == ("ACCESS_REFUSED - access to exchange 'amq.topic' in vhost '/' refused "
                      "for user 'stomp-ro'")


@pytest.mark.parametrize("login,passcode,vhost,body", [
    ("guest", "wrong", "/", "Access refused for user 'guest'\n"),
    ("nobody", "guest", "/", "Access refused for user 'nobody'\n"),
    ("guest", "guest", "no-such-vhost", "Virtual host 'no-such-vhost' access denied"),
])
def test_bad_connect(broker, login, passcode, vhost, body):
    c = Client(at(broker), login=login, passcode=passcode, vhost=vhost, connect=False)
    try:
        c.c.connect(login, passcode, wait=False)
        e = c.error()
        assert (e.headers["message"], e.body) == ("Bad CONNECT", body)
    finally:
        c.close()


def test_raw_frames_versions_and_garbage(broker, clients):
    r = Raw(at(broker), connect=False)
    r.send("SEND", [("destination", "/queue/x")], b"before login")
    e = r.read()
    assert (e.command, e.headers["message"]) == ("ERROR", "Illegal command")
    r.send("CONNECT", [("accept-version", "100.1")])
    e = r.read()
    assert (e.headers["message"], e.body) == ("Version mismatch",
                                              b"Supported versions are 1.0,1.1,1.2\n")
    r.send("CONNECT", [("login", "guest"), ("passcode", "guest")])    # no version: 1.0
    ok = r.read()
    assert (ok.command, ok.headers["version"], ok.headers["heart-beat"]) == \
        ("CONNECTED", "1.0", "0,0")
    assert ok.headers["session"].startswith("session-")
    # a 1.0 SEND with a body holding NULs (content-length), EOLs between frames
    r.sendall(b"\n\nSUBSCRIBE\ndestination:/queue/stomp-raw\n\n\x00\n"
              b"SEND\ndestination:/queue/stomp-raw\ncontent-length:5\n\na\x00b\x00c\x00\n")
    m = r.read()
    assert (m.command, m.body, m.headers["message-id"].split("@@")[0]) == \
        ("MESSAGE", b"a\x00b\x00c", "Q_/queue/stomp-raw")
    other = clients()
    r.sendall(b"SEND\nno colon here\n\nx\x00")       # does not parse: that connection ends
    assert r.closed_by_broker()
    other.subscribe("/queue/stomp-raw-2", "o")
    other.c.send("/queue/stomp-raw-2", "others go on")
    assert other.message().body == "others go on"


def test_heart_beats_both_ways(broker):
    r = Raw(at(broker), connect=False)
    r.send("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", "guest"),
                       ("passcode", "guest"), ("heart-beat", "0,500")])
    ok = r.read()
    assert ok.headers["heart-beat"] == "1000,0"     # RabbitMQ's whole seconds
    r.s.settimeout(TIMEOUT)
    assert r.s.recv(1) == b"\n"              # the broker's beat, on a silent connection
    r.close()
    r = Raw(at(broker), connect=False)
    r.send("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", "guest"),
                       ("passcode", "guest"), ("heart-beat", "1000,0")])
    assert r.read().headers["heart-beat"] == "0,1000"
    started = time.monotonic()
    assert r.closed_by_broker()              # the client never beats
    assert time.monotonic() - started >= 1.0


def test_management_shows_stomp_clients(broker, clients):
    c = clients(version="1.1")
    c.subscribe("/queue/stomp-mgmt", "m")
    local = c.c.transport.socket.getsockname()
    mine = wait_until(lambda: [x for x in broker.api("connections")
                               if x.get("peer_port") == local[1]], TIMEOUT, "its connection")
    assert mine[0]["protocol"] == "STOMP 1.1"
    assert mine[0]["port"] == broker.stomp_port
    assert mine[0]["client_properties"] == {"product": "STOMP client"}
    listeners = {x["protocol"] for x in broker.api("overview")["listeners"]}
    assert {"stomp", "http/web-stomp"} <= listeners
    assert broker.api("health/checks/protocol-listener/stomp12")["status"] == "ok"


def test_stomp_over_websockets_meets_stomp_over_tcp(broker, clients):
    tcp = clients()
    tcp.subscribe("/topic/stomp.web", "t")
    web = Client(("127.0.0.1", broker.web_stomp_port), ws_path="/ws")
    try:
        web.subscribe("/queue/stomp-web-in", "w")
        web.c.send("/topic/stomp.web", "from the browser")
        assert tcp.message().body == "from the browser"
        tcp.c.send("/queue/stomp-web-in", "to the browser")
        assert web.message().body == "to the browser"
    finally:
        web.close()


def test_a_slow_reader_leaves_its_messages_in_the_queue(broker, amqp):
    """A subscriber that does not read: the adapter stops reading its AMQP connection once
    the client's socket is full, the broker stops sending to that connection (its credit
    window) and the rest stays ready in the queue; then all arrive in order."""
    amqp.queue_declare("stomp-slow")
    body = b"x" * 8192
    for i in range(5000):                    # 40 MiB: more than the sockets' buffers hold
        amqp.basic_publish("", "stomp-slow", str(i).encode().ljust(8, b" ") + body)
    r = Raw(at(broker))
    r.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    r.send("SUBSCRIBE", [("destination", "/amq/queue/stomp-slow"), ("id", "s")])
    wait_until(lambda: broker.api("queues/%2F/stomp-slow").get("consumers") == 1, TIMEOUT,
               "the subscription")
    # what must not happen: the queue drained into the broker's or the adapter's memory
    # (without the pause it empties in about a second); watched for three
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        ready = broker.api("queues/%2F/stomp-slow").get("messages_ready", 0)
        assert ready >= 1000, ready
        time.sleep(0.1)
    for i in range(5000):
        m = r.read()
        assert m.body[:8].strip() == str(i).encode()
    r.close()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_disk_alarm_holds_stomp_publishers_at_their_send(tmp_path, layout):
    """RabbitMQ's resource alarms hold a STOMP publisher as its reader does: frames before
    a SEND are done (a SUBSCRIBE gets its RECEIPT, a consumer its messages), the SEND and
    what follows it wait (no RECEIPT, nothing reaches the queue), the connection stays up,
    and other clients are not held."""
    with BrokerProcess(tmp_path, *LAYOUTS[layout], "--stomp-port", "-1", "--disk-free-limit",
                       str(1 << 60), management=True) as b:
        assert b.api("nodes")[0]["disk_free_alarm"] is True
        conn = pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port))
        ch = conn.channel()
        ch.queue_declare("stomp-alarm")
        publisher = Raw(at(b))
        consumer = Client(at(b))
        try:
            publisher.send("SUBSCRIBE", [("destination", "/amq/queue/stomp-alarm"),
                                         ("id", "s"), ("receipt", "sub")])
            assert publisher.read().headers["receipt-id"] == "sub"     # not held
            publisher.send("SEND", [("destination", "/amq/queue/stomp-alarm"),
                                    ("receipt", "send")], b"held")
            publisher.send("UNSUBSCRIBE", [("id", "s"), ("receipt", "unsub")])
            publisher.s.settimeout(2.0)
            with pytest.raises(socket.timeout):              # what must not come, bounded
                publisher.read()
            assert b.api("queues/%2F/stomp-alarm")["messages"] == 0
            consumer.subscribe("/amq/queue/stomp-alarm", "c")    # another client: goes on
            conn.close()
        finally:
            publisher.close()
            consumer.close()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_implicit_connect_and_hidden_server_info(tmp_path, layout):
    """RabbitMQ's stomp.implicit_connect: a first frame other than CONNECT logs the client in
    as the default user (no CONNECTED) and is done; stomp.hide_server_info: CONNECTED says
    no server."""
    with BrokerProcess(tmp_path / "implicit", *LAYOUTS[layout], "--stomp-port", "-1",
                       "--stomp-implicit-connect", "--stomp-hide-server-info") as b:
        r = Raw(at(b), connect=False)
        try:
            r.send("SUBSCRIBE", [("destination", "/queue/stomp-implicit"), ("id", "s"),
                                 ("receipt", "sub")])
            receipt = r.read()
            assert (receipt.command, receipt.headers["receipt-id"]) == ("RECEIPT", "sub")
            r.send("SEND", [("destination", "/queue/stomp-implicit")], b"no CONNECT needed")
            m = r.read()
            assert (m.command, m.body) == ("MESSAGE", b"no CONNECT needed")
        finally:
            r.close()
        r = Raw(at(b), connect=False)
        try:
            r.send("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", "guest"),
                               ("passcode", "guest")])
            ok = r.read()
            assert ok.command == "CONNECTED" and "server" not in ok.headers
            assert ok.headers["version"] == "1.2"
        finally:
            r.close()
    # a refused implicit login ends the connection, as RabbitMQ's
    with BrokerProcess(tmp_path / "strict", *LAYOUTS[layout], "--stomp-port", "-1",
                       "--stomp-implicit-connect", "--stomp-vhost", "nowhere") as strict:
        r = Raw(at(strict), connect=False)
        try:
            r.send("SEND", [("destination", "/queue/x")], b"who am I?")
            e = r.read()
            assert (e.command, e.headers["message"]) == ("ERROR", "Bad CONNECT")
            assert r.closed_by_broker()
        finally:
            r.close()
