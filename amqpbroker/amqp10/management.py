"""RabbitMQ 4's AMQP management node (``/management``): HTTP over AMQP 1.0, no I/O.

RabbitMQ 4's AMQP 1.0 client libraries (``rabbitmq-amqp-python-client``, the Java, .NET and
Go ones) declare and delete queues, exchanges and bindings, purge queues and read a queue's
counts through it. A client attaches a *link pair* to address ``/management``: a sending
link and a receiving link with the same name and the link property ``paired: true``. Each
request is one settled message on the sending link::

    properties: message-id, to = the request target ("/queues/orders"),
                subject = the method ("GET", "PUT", "DELETE", "POST"), reply-to = "$me"
    body:       an amqp-value (a map for PUT and POST, null otherwise)

and its response comes back on the receiving link: ``correlation-id`` the request's
message-id, ``subject`` the status code ("200", "201", "204", "400", "403", "404", "409"),
application property ``http:response`` "1.1", and an amqp-value body (the resource, or the
error text). The requests (``rabbit_amqp_management.erl``, RabbitMQ 4.2)::

    GET    /queues/:queue                 200 the queue (counts, type, arguments, replicas)
    PUT    /queues/:queue                 201 declared, 200 it existed and is equivalent,
                                          409 it differs (as a 0-9-1 declare's 406)
    DELETE /queues/:queue                 200 {message_count}
    DELETE /queues/:queue/messages        200 {message_count} (a purge)
    PUT    /exchanges/:exchange           204 (declared, or it existed and is equivalent)
    DELETE /exchanges/:exchange           204
    POST   /bindings                      204 {source, destination_queue |
                                          destination_exchange, binding_key, arguments}
    DELETE /bindings/src=S;dstq=Q;key=K;args=H   (dste= for an exchange) 204, found or not
    GET    /bindings?src=S&dstq=Q&key=K   200 [bindings, each with its ``location``]
    PUT    /auth/tokens                   204 (an OAuth 2 token, binary: the connection's
                                          new credential, as AMQP 0-9-1's update-secret)

Names in paths are percent-encoded. ``args=H`` names a binding's arguments by a hash: empty
for none; otherwise ours (RabbitMQ hashes the Erlang term), which clients take from a
binding's ``location`` and never build.

``request`` turns a request message into an ``Operation`` (or ``HttpError``: 400 for what
is malformed, 403 for the default exchange and the reserved ``amq.`` prefix, checked here
as RabbitMQ checks them before anything is done); ``response`` encodes the answer. The
connection (``amqp10/connection.py``) carries an operation out over its AMQP 0-9-1 channel,
so permissions, limits and every process layout are the broker's own.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass, field

from ..stream_protocol import amqp10 as types
from ..stream_protocol.amqp10 import NULL, NotAmqp10

ADDRESS = "/management"


class HttpError(Exception):
    """A request answered with an error ``status`` and RabbitMQ's ``text``."""

    def __init__(self, status: int, text: str):
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


@dataclass
class Operation:
    """What a request asks: ``kind`` (``get_queue``, ``declare_queue``, ``delete_queue``,
    ``purge_queue``, ``declare_exchange``, ``delete_exchange``, ``bind``, ``unbind``,
    ``list_bindings``, ``update_secret``), the names it is about, and the declared
    properties."""
    kind: str
    name: str = ""                          # the queue or exchange (a binding's source)
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    internal: bool = False
    type: str = "direct"                    # an exchange's
    arguments: dict = field(default_factory=dict)
    destination_kind: str = ""              # a binding's: "queue" or "exchange"
    destination: str = ""
    key: str = ""                           # a binding's key
    args_hash: str = ""                     # unbind: which binding among equal keys
    token: str = ""                         # update_secret: the new OAuth 2 token


@dataclass
class Request:
    message_id: tuple                       # the typed value, echoed as correlation-id
    method: str
    target: str
    body: tuple


# ----------------------------------------------------------------------------- requests
def parse(data: bytes) -> Request:
    """A request message's properties and body; ``HttpError`` 400 if it lacks them."""
    props, body = NULL, NULL            # no body section: a null one (what GET sends)
    pos = 0
    try:
        while pos < len(data):
            value, pos = types._value(data, pos, len(data))
            code = types._section_code(value[1][0]) if value[0] == "described" else None
            if code is None:
                raise NotAmqp10(f"a {value[0]} where a section belongs")
            if code == types.PROPERTIES:
                props = value[1][1]
            elif code == types.AMQP_VALUE:
                body = value[1][1]
    except (NotAmqp10, RecursionError) as exc:
        raise HttpError(400, f"not an AMQP 1.0 message: {exc}") from None
    fields = types._fields(props, 5) if props[0] == "list" else [NULL] * 5
    message_id, to, subject, reply_to = fields[0], fields[2], fields[3], fields[4]
    if to[0] != "utf8" or subject[0] != "utf8":
        raise HttpError(400, "a management request needs properties 'to' (the path) and "
                             "'subject' (the method)")
    if reply_to != ("utf8", "$me"):
        raise HttpError(400, "a management request's reply-to must be '$me'")
    return Request(message_id, subject[1], to[1], body)


def operation(req: Request) -> Operation:
    """What the request asks (``HttpError`` if it is malformed or refused as such)."""
    path, _, query = req.target.partition("?")
    segments = path.split("/")
    if segments[0] != "":
        raise HttpError(400, f"failed to normalize URI '{req.target}'")
    segments = segments[1:]
    method, body = req.method, req.body
    match (method, segments):
        case ("GET", ["queues", name]):
            _no_body(body)
            return Operation("get_queue", _decoded(name))
        case ("PUT", ["queues", name]):
            op = _declared("declare_queue", "queue", ("durable", "exclusive", "auto_delete"),
                           body)
            op.name = _decoded(name)
            if not op.name:
                raise HttpError(400, "declare queue with empty name not allowed")
            _no_cr_lf(op.name)
            _not_reserved("queue", op.name)
            return op
        case ("DELETE", ["queues", name, "messages"]):
            _no_body(body)
            return Operation("purge_queue", _decoded(name))
        case ("DELETE", ["queues", name]):
            _no_body(body)
            op = Operation("delete_queue", _decoded(name))
            _no_cr_lf(op.name)
            return op
        case ("PUT", ["exchanges", name]):
            op = _declared("declare_exchange", "exchange",
                           ("durable", "auto_delete", "internal"), body)
            op.name = _decoded(name)
            _not_default(op.name)
            return op                   # cr/lf and amq.: only for a new one (the node's)
        case ("DELETE", ["exchanges", name]):
            _no_body(body)
            op = Operation("delete_exchange", _decoded(name))
            _no_cr_lf(op.name)
            _not_default(op.name)
            _not_reserved("exchange", op.name)
            return op
        case ("POST", ["bindings"]):
            op = _binding_body(body)
            _binding_checks(op)
            return op
        case ("DELETE", ["bindings", segment]):
            _no_body(body)
            op = _binding_segment(segment)
            _binding_checks(op)
            return op
        case ("GET", ["bindings"]):
            _no_body(body)
            return _binding_query(query)
        case ("PUT", ["auth", "tokens"]):
            if body[0] != "binary":
                raise HttpError(400, "the token must be an amqp-value binary")
            return Operation("update_secret", token=body[1].decode("utf-8", "replace"))
    raise HttpError(400, f"{method} {req.target}: no such request")


def _decoded(segment: str) -> str:
    return urllib.parse.unquote(segment, errors="strict")


def _no_body(body: tuple) -> None:
    if body != NULL:
        raise HttpError(400, "this request takes no body (an amqp-value null)")


def _map(body: tuple, what: str) -> list:
    if body[0] != "map":
        raise HttpError(400, f"the {what} must be an amqp-value map")
    return body[1]


def _declared(kind: str, what: str, flags: tuple, body: tuple) -> Operation:
    """A queue's or exchange's PUT body: its boolean ``flags``, ``arguments``, and an
    exchange's ``type``; anything else is a 400, as RabbitMQ's ``decode_queue`` /
    ``decode_exchange`` (their defaults are ``Operation``'s: durable, not exclusive,
    not auto-delete, not internal, direct)."""
    op = Operation(kind)
    for k, v in _map(body, what):
        key = k[1] if k[0] == "utf8" else None
        if key in flags:
            if v[0] != "boolean":
                raise HttpError(400, f"bad {what} property '{key}': not a boolean")
            setattr(op, key, v[1])
        elif key == "type" and what == "exchange" and v[0] == "utf8":
            op.type = v[1]
        elif key == "arguments":
            op.arguments = arguments_in(v)
        else:
            raise HttpError(400, f"bad {what} property {k[1]!r}")
    return op


def _binding_body(body: tuple) -> Operation:
    op = Operation("bind")
    seen = set()
    for k, v in _map(body, "binding"):
        key = k[1] if k[0] == "utf8" else None
        if key == "arguments":
            op.arguments = arguments_in(v)
        elif key in ("source", "destination_queue", "destination_exchange", "binding_key") \
                and v[0] == "utf8":
            if key == "source":
                op.name = v[1]
            elif key == "binding_key":
                op.key = v[1]
            else:
                op.destination_kind = key[len("destination_"):]
                op.destination = v[1]
        else:
            raise HttpError(400, f"bad binding field {k[1]!r}")
        seen.add(key)
    missing = [k for k in ("source", "binding_key", "arguments") if k not in seen]
    if not op.destination_kind:
        missing.append("destination_queue or destination_exchange")
    if missing:
        raise HttpError(400, f"binding fields missing: {', '.join(missing)}")
    return op


# src=e1;dstq=q2;key=my-key;args=  (names percent-encoded; args URL-safe base64, no padding)
_SEGMENT = re.compile(r"^src=([0-9A-Za-z\-._~%]+);dst([eq])=([0-9A-Za-z\-._~%]+);"
                      r"key=([0-9A-Za-z\-._~%]*);args=([0-9A-Za-z\-_]*)$")


def _binding_segment(segment: str) -> Operation:
    m = _SEGMENT.match(segment)
    if m is None:
        raise HttpError(400, f"bad binding path segment '{segment}'")
    src, kind, dst, key, args_hash = m.groups()
    return Operation("unbind", _decoded(src), destination_kind="queue" if kind == "q"
                     else "exchange", destination=_decoded(dst), key=_decoded(key),
                     args_hash=args_hash)


def _binding_query(query: str) -> Operation:
    q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if "src" not in q or "key" not in q:
        raise HttpError(400, f"missing 'src' or 'key' in query: '{query}'")
    if "dste" in q:
        kind, dst = "exchange", q["dste"]
    elif "dstq" in q:
        kind, dst = "queue", q["dstq"]
    else:
        raise HttpError(400, f"missing 'dste' or 'dstq' in query: '{query}'")
    return Operation("list_bindings", q["src"], destination_kind=kind, destination=dst,
                     key=q["key"])


def _no_cr_lf(name: str) -> None:
    if "\n" in name or "\r" in name:
        raise HttpError(400, f"Bad name '{name}': line feed and carriage return characters "
                             f"not allowed")


def _not_default(name: str) -> None:
    if name == "":
        raise HttpError(403, "operation not permitted on the default exchange")


def _not_reserved(kind: str, name: str) -> None:
    if name.startswith("amq."):
        raise HttpError(403, f"{kind} '{name}' starts with reserved prefix 'amq.'")


def check_new_exchange(name: str) -> None:
    """What the node checks of an exchange it is about to create (not of an existing one,
    which a PUT may redeclare: amq.direct, say)."""
    _no_cr_lf(name)
    _not_reserved("exchange", name)


def _binding_checks(op: Operation) -> None:
    for name, kind in ((op.name, "exchange"), (op.destination, op.destination_kind)):
        if kind == "exchange":
            _not_default(name)
        _no_cr_lf(name)


# ----------------------------------------------------------------------------- arguments
def arguments_in(value: tuple) -> dict:
    """An amqp-value map of arguments as an AMQP 0-9-1 table (``mc_amqpl:to_091``): string
    or symbol keys only."""
    if value == NULL:
        return {}
    table = {}
    for k, v in _map(value, "arguments"):
        if k[0] not in ("utf8", "symbol"):
            raise HttpError(400, f"unsupported argument {k!r}")
        item = types._header_value(v)
        if item is types._DROP:
            raise HttpError(400, f"unsupported argument value {v!r} for '{k[1]}'")
        table[k[1]] = item
    return table


def arguments_out(table: dict | None) -> tuple:
    """An AMQP 0-9-1 table as an amqp-value map (``mc_amqpl:from_091``)."""
    items = []
    for k, v in (table or {}).items():
        typed = types._from_header(v)
        if typed is not None:
            items.append((("utf8", k), typed))
    return ("map", items)


def args_hash(table: dict | None) -> str:
    """A binding's arguments as the ``args=`` of its location: empty for none (as RabbitMQ),
    else URL-safe base64 of 4 bytes of a digest of them (ours)."""
    if not table:
        return ""
    digest = hashlib.sha256(json.dumps(table, sort_keys=True, default=repr).encode())
    return base64.urlsafe_b64encode(digest.digest()[:4]).decode().rstrip("=")


def binding_location(source: str, kind: str, destination: str, key: str,
                     table: dict | None) -> str:
    quote = lambda s: urllib.parse.quote(s, safe="-._~")    # noqa: E731 - RFC 3986's
    return (f"/bindings/src={quote(source)};dst{'q' if kind == 'queue' else 'e'}="
            f"{quote(destination)};key={quote(key)};args={args_hash(table)}")


# ----------------------------------------------------------------------------- responses
def queue_value(name: str, vhost: str, *, durable: bool, auto_delete: bool,
                exclusive: bool, queue_type: str, arguments: dict, messages: int,
                consumers: int, leader: str | None, replicas: list[str]) -> tuple:
    items = [("message_count", ("ulong", messages)), ("consumer_count", ("uint", consumers)),
             ("name", ("utf8", name)), ("vhost", ("utf8", vhost)),
             ("durable", ("boolean", durable)), ("auto_delete", ("boolean", auto_delete)),
             ("exclusive", ("boolean", exclusive)), ("type", ("utf8", queue_type)),
             ("arguments", arguments_out(arguments)),
             ("replicas", ("array", [("utf8", r) for r in replicas]))]
    if leader is not None:
        items.insert(0, ("leader", ("utf8", leader)))
    return ("map", [(("utf8", k), v) for k, v in items])


def count_value(messages: int) -> tuple:
    return ("map", [(("utf8", "message_count"), ("ulong", messages))])


def bindings_value(bindings: list[tuple]) -> tuple:
    """``bindings``: (source, destination kind, destination, key, arguments)."""
    out = []
    for source, kind, destination, key, table in bindings:
        out.append(("map", [
            (("utf8", "source"), ("utf8", source)),
            (("utf8", f"destination_{kind}"), ("utf8", destination)),
            (("utf8", "binding_key"), ("utf8", key)),
            (("utf8", "arguments"), arguments_out(table)),
            (("utf8", "location"), ("utf8", binding_location(source, kind, destination,
                                                             key, table)))]))
    return ("list", out)


def response(message_id: tuple, status: int, body: tuple = NULL) -> bytes:
    """The response message: properties (correlation-id, subject the status), application
    property ``http:response``, and the body as an amqp-value (an error's text)."""
    props = ("list", [NULL, NULL, NULL, ("utf8", str(status)), NULL, message_id])
    app = ("map", [(("utf8", "http:response"), ("utf8", "1.1"))])
    return (types._section(types.PROPERTIES, props)
            + types._section(types.APPLICATION_PROPERTIES, app)
            + types._section(types.AMQP_VALUE, body))


def error_response(message_id: tuple, exc: HttpError) -> bytes:
    return response(message_id, exc.status, ("utf8", exc.text))
