"""``ctl publish`` and ``ctl get``: one message in through an exchange, messages out of a
queue (``/api/exchanges/.../publish``, ``/api/queues/.../get``). Both are for operators
and tests, not for throughput: each message is one HTTP request."""
from __future__ import annotations

import base64
import sys

from .api import Refused, add_output_flags, emit, q, say
from .args import key_values

GET_COLUMNS = ("routing_key", "exchange", "redelivered", "message_count", "payload_bytes",
               "payload")
ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
            "reject_requeue_false")


def publish(api, args) -> None:
    body = sys.stdin.buffer.read() if args.body is None else args.body.encode()
    try:
        payload, encoding = body.decode(), "string"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(body).decode(), "base64"
    properties = dict(args.property)
    if args.header:
        properties["headers"] = dict(args.header)
    if args.persistent:
        properties["delivery_mode"] = 2
    exchange = args.exchange or "amq.default"
    answer = api.call("POST", f"/api/exchanges/{q(args.vhost)}/{q(exchange)}/publish",
                      {"properties": properties, "routing_key": args.routing_key,
                       "payload": payload, "payload_encoding": encoding})
    if answer.get("routed"):
        say(f"published {len(body)} bytes to exchange '{args.exchange}' with routing key "
            f"'{args.routing_key}'")
        return
    if args.mandatory:
        raise Refused(312, f"NO_ROUTE - exchange '{args.exchange}' routed the message with "
                           f"routing key '{args.routing_key}' to no queue")
    print(f"published, but exchange '{args.exchange}' routed it to no queue "
          f"(routing key '{args.routing_key}'): it is dropped", file=sys.stderr)


def get(api, args) -> None:
    messages = api.call("POST", f"/api/queues/{q(args.vhost)}/{q(args.queue)}/get",
                        {"count": args.count, "ackmode": args.ackmode, "encoding": "auto"},
                        what=f"queue '{args.queue}' in vhost '{args.vhost}'")
    if args.payload_only:
        for m in messages:
            data = m["payload"]
            sys.stdout.buffer.write(base64.b64decode(data) if m["payload_encoding"] == "base64"
                                    else data.encode())
            sys.stdout.buffer.write(b"\n")
        return
    emit(messages, args)


def register(commands, flags) -> None:
    p = commands.add_parser("publish", parents=flags,
                            help="publish one message (body from the argument or stdin)")
    p.add_argument("body", nargs="?", help="the message body (default: stdin, read whole)")
    p.add_argument("--exchange", "-e", default="",
                   help="the exchange (default: the default exchange, routing key = queue)")
    p.add_argument("--routing-key", "-k", default="")
    p.add_argument("--property", "-p", action="append", default=[], type=key_values,
                   metavar="NAME=VALUE",
                   help="a basic property: content_type, delivery_mode, priority, "
                        "correlation_id, reply_to, expiration, message_id, timestamp, type, "
                        "user_id, app_id; repeatable")
    p.add_argument("--header", "-H", action="append", default=[], type=key_values,
                   metavar="NAME=VALUE", help="an application header; repeatable")
    p.add_argument("--persistent", action="store_true", help="delivery_mode 2")
    p.add_argument("--mandatory", action="store_true",
                   help="exit 1 when the message reaches no queue (else: a warning, exit 0)")
    p.set_defaults(run=publish)

    p = commands.add_parser("get", parents=flags,
                            help="take messages from a queue (requeued unless --ackmode "
                                 "says otherwise)")
    p.add_argument("queue")
    p.add_argument("--count", "-n", type=int, default=1, help="at most this many (default 1)")
    p.add_argument("--ackmode", choices=ACKMODES, default="ack_requeue_true",
                   help="what becomes of them: ack_requeue_true (default: they stay) or "
                        "ack_requeue_false (removed), or reject_requeue_*")
    p.add_argument("--payload-only", action="store_true",
                   help="print each body alone, one per line, as bytes")
    add_output_flags(p, GET_COLUMNS)
    p.set_defaults(run=get)
