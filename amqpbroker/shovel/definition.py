"""A dynamic shovel's definition: the value of a runtime parameter of component ``shovel``,
checked as RabbitMQ 3.10's ``rabbit_shovel_parameters`` checks it (AMQP 0-9-1 on both ends),
with its reasons; and the AMQP URIs it names, read as RabbitMQ's ``amqp_uri`` reads them.

Ours is stricter where RabbitMQ takes a value and fails later at run time (measured on
3.10.8): an empty URI list, the AMQP 1.0 protocol (not this broker's), queue and consumer
arguments a declare or consume would refuse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .. import errors
from ..erlang import erlang_term
from ..parameter_validation import (Invalid, binary, boolean, enum, number, pairs,
                                    proplist)
from ..queue_args import QueueArgs

ACK_MODES = ("no-ack", "on-publish", "on-confirm")
PROTOCOLS = ("amqp10", "amqp091")
PUBLISH_PROPERTIES = {          # basic properties a shovel may set on what it publishes
    "content_type": "binary", "content_encoding": "binary", "delivery_mode": "number",
    "priority": "number", "correlation_id": "binary", "reply_to": "binary",
    "expiration": "binary", "message_id": "binary", "timestamp": "number",
    "type": "binary", "user_id": "binary", "app_id": "binary", "cluster_id": "binary"}
DEFAULT_PREFETCH = 1000
DEFAULT_RECONNECT_DELAY = 5


@dataclass(frozen=True)
class Uri:
    """An AMQP URI as ``amqp_uri:parse`` reads it. ``host`` None: this broker itself
    (RabbitMQ's direct connection; ``user`` None: the shovel's own identity)."""
    text: str
    host: str | None
    port: int
    vhost: str
    user: str | None
    password: str | None
    tls: bool
    query: dict = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """The URI without its credentials (``amqp_uri:remove_credentials``)."""
        scheme, sep, rest = self.text.partition("://")
        end = min((i for i in map(rest.find, "/?#") if i != -1), default=len(rest))
        return scheme + sep + rest[:end].rpartition("@")[2] + rest[end:]


def _unescape(text: str, whole: str) -> str:
    i = text.find("%")
    while i != -1:
        pair = text[i + 1:i + 3]
        if len(pair) < 2:
            raise _uri_error(whole, f"{{unterminated_entity,{_chars(text[i:])}}}")
        try:
            int(pair, 16)
        except ValueError:
            raise _uri_error(whole, f"{{invalid_entitiy,['%',{_char(pair[0])},"
                                    f"{_char(pair[1])}]}}") from None
        i = text.find("%", i + 3)
    return unquote(text)


def _char(c: str) -> str:
    return f"${c}"


def _chars(text: str) -> str:
    return '"' + text + '"'


class _UriError(ValueError):
    pass


def _uri_error(uri: str, term: str) -> _UriError:
    return _UriError(f'"{uri}" not a valid URI: {{{term},"{uri}"}}')


def parse_uri(uri: str) -> Uri:
    """``uri`` read as RabbitMQ reads it; ``_UriError`` with RabbitMQ's reason otherwise."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        if "out of range" in str(exc):
            port_text = uri.rsplit(":", 1)[-1].split("/")[0]
            raise _uri_error(uri, f"{{port_out_of_range,{port_text}}}") from None
        raise _uri_error(uri, "{unable_to_parse_uri,no_scheme}") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in uri:
        raise _uri_error(uri, "{unable_to_parse_uri,no_scheme}")
    if scheme not in ("amqp", "amqps"):
        raise _uri_error(uri, f'{{unexpected_uri_scheme,"{parts.scheme}"}}')
    if port is not None and not 0 < port <= 65535:
        raise _uri_error(uri, f"{{port_out_of_range,{port}}}")
    host = parts.hostname or None
    if host is None and port is not None:
        raise _uri_error(uri, "port_requires_host")
    if not parts.path:
        vhost = "/"
    else:
        rest = parts.path[1:]
        if "/" in rest:
            raise _uri_error(uri, f'{{invalid_vhost,"{rest}"}}')
        vhost = _unescape(rest, uri)
    user = _unescape(parts.username, uri) if parts.username is not None else None
    password = _unescape(parts.password, uri) if parts.password is not None else None
    query = {}
    for pair in filter(None, parts.query.split("&")):
        key, _, value = pair.partition("=")
        query[unquote(key)] = unquote(value)
    tls = scheme == "amqps"
    return Uri(uri, host, port or (5671 if tls else 5672), vhost, user, password, tls, query)


@dataclass(frozen=True)
class Definition:
    """A checked shovel definition, with RabbitMQ's defaults."""
    src_uris: tuple
    dest_uris: tuple
    src_queue: str | None
    src_exchange: str | None
    src_exchange_key: str
    src_queue_args: dict
    src_consumer_args: dict
    prefetch: int
    delete_after: object           # "never", "queue-length" or a count
    dest_queue: str | None
    dest_exchange: str | None
    dest_exchange_key: str | None
    dest_queue_args: dict
    add_forward_headers: bool
    add_timestamp_header: bool
    publish_properties: dict
    ack_mode: str
    reconnect_delay: float


def _queue_name(key, v):
    if not isinstance(v, str):
        return f"{key} should be binary, actually was {erlang_term(v)}"
    if len(v.encode()) > 255:
        return f"{key} should be less than 255 bytes, actually was {len(v.encode())}"
    return None


def _delete_after(key, v):
    if v in ("never", "queue-length") or (isinstance(v, int) and not isinstance(v, bool)
                                          and v >= 0):
        return None
    return f'{key} should be a number greater than or equal to 0, "never" or ' \
           f'"queue-length", actually was {erlang_term(v)}'


def _queue_args(queue: str, vhost: str):
    """The arguments the shovel declares ``queue`` with (in ``vhost`` of its URI) pass the
    checks of queue.declare."""
    def check_args(key, v):
        if not isinstance(v, dict):
            return f"{key} not a list {erlang_term(v)}"
        try:
            QueueArgs(queue, vhost, v)
        except errors.AMQPError as exc:
            return f"{key}: {exc.text}"
        return None
    return check_args


def _consumer_args(key, v):
    if not isinstance(v, dict):
        return f"{key} not a list {erlang_term(v)}"
    priority = v.get("x-priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        return f"{key}: invalid arg 'x-priority': {erlang_term(priority)}"
    return None


def _properties(key, v):
    if not isinstance(v, dict):
        return f"{key} not a list {erlang_term(v)}"
    unknown = {k: x for k, x in v.items() if k not in PUBLISH_PROPERTIES}
    if unknown:
        return f"Unrecognised terms {pairs(unknown)} in {key}"
    for k, x in v.items():
        reason = (binary if PUBLISH_PROPERTIES[k] == "binary" else number)(k, x)
        if reason:
            return reason
    return None


# RabbitMQ's order: the shovel's keys, the source's, the destination's (``proplist``
# reports the errors of later keys first)
_SHOVEL = [("reconnect-delay", number), ("ack-mode", enum(ACK_MODES)),
           ("src-protocol", enum(PROTOCOLS)), ("dest-protocol", enum(PROTOCOLS))]
_SOURCE = [("src-exchange", binary), ("src-exchange-key", binary), ("src-queue", binary),
           ("src-queue-args", None), ("src-consumer-args", _consumer_args),
           ("prefetch-count", number), ("src-prefetch-count", number),
           ("delete-after", _delete_after), ("src-delete-after", _delete_after)]
_DEST = [("dest-exchange", binary), ("dest-exchange-key", binary),
         ("dest-queue", _queue_name), ("dest-queue-args", None),
         ("add-forward-headers", boolean), ("add-timestamp-header", boolean),
         ("dest-add-forward-headers", boolean), ("dest-add-timestamp-header", boolean),
         ("publish-properties", _properties), ("dest-publish-properties", _properties)]


def check(value, name: str, vhost_refusal=None) -> Definition:
    """The definition ``value`` of shovel ``name``, or ``Invalid`` with RabbitMQ's reasons.
    ``vhost_refusal(vhost)``: why the user setting it may not use a vhost of this broker
    that a URI names, or None (not given: not checked, as at start and in imports)."""
    if not isinstance(value, dict):
        raise Invalid([f"{name} not a list {erlang_term(value)}"])
    reasons = []
    if value.get("src-protocol", "amqp091") != "amqp091" \
            or value.get("dest-protocol", "amqp091") != "amqp091":
        if all(value.get(k, "amqp091") in PROTOCOLS for k in ("src-protocol", "dest-protocol")):
            raise Invalid(["AMQP 1.0 shovels are not supported by this broker: src-protocol "
                           "and dest-protocol must be amqp091"])
    has_x, has_q = "src-exchange" in value, "src-queue" in value
    if not (has_x or has_q):
        reasons.append("Must specify 'src-exchange' or 'src-queue'")
    elif has_x and has_q:
        reasons.append("Cannot specify 'src-exchange' and 'src-queue'")
    delete_after = value.get("src-delete-after", value.get("delete-after"))
    if isinstance(delete_after, int) and not isinstance(delete_after, bool) \
            and value.get("ack-mode") == "no-ack":
        reasons.append("Cannot specify 'no-ack' and numerical 'delete-after'")
    if "dest-exchange" in value and "dest-queue" in value:
        reasons.append("Cannot specify 'dest-exchange' and 'dest-queue'")
    uri_check = uri_list(vhost_refusal)
    rules = [*_SHOVEL, ("src-uri", uri_check), *_SOURCE, ("dest-uri", uri_check), *_DEST]
    rules = [(key, rule or _queue_args_of(key, value)) for key, rule in rules]
    reasons += proplist(name, value, rules, mandatory=("src-uri", "dest-uri"))
    if reasons:
        raise Invalid(reasons)
    return _definition(value)


def _queue_args_of(key: str, value: dict):
    """The check of ``src-queue-args`` or ``dest-queue-args``: the arguments that end's
    queue (in the vhost of its URI) would be declared with."""
    end = key.split("-")[0]
    queue, uri = value.get(f"{end}-queue"), value.get(f"{end}-uri")
    return _queue_args(queue if isinstance(queue, str) else "", _vhost_of(uri))


def _vhost_of(uris) -> str:
    """The vhost of a definition's first URI, for texts ("/" when there is none)."""
    first = uris if isinstance(uris, str) else uris[0] if isinstance(uris, list) and uris \
        else None
    try:
        return parse_uri(first).vhost if isinstance(first, str) else "/"
    except _UriError:
        return "/"


def uri_list(vhost_refusal):
    """The check of a URI or a list of them (a local URI's vhost by ``vhost_refusal``)."""
    def check_uris(key, v):
        uris = [v] if isinstance(v, str) else v
        if not isinstance(uris, list):
            return f"{key} should be list, actually was {erlang_term(v)}"
        if not uris:
            return f"{key} should be a non-empty list of URIs, actually was []"
        for uri in uris:
            if not isinstance(uri, str):
                return f"{key} should be list, actually was {erlang_term(uri)}"
            try:
                parsed = parse_uri(uri)
            except _UriError as exc:
                return str(exc)
            if parsed.host is None and vhost_refusal is not None:
                refusal = vhost_refusal(parsed.vhost)
                if refusal:
                    return refusal
        return None
    return check_uris


def _definition(v: dict) -> Definition:
    def uris(key):
        raw = v[key]
        return tuple(parse_uri(u) for u in ([raw] if isinstance(raw, str) else raw))
    dest_queue = v.get("dest-queue")
    return Definition(
        src_uris=uris("src-uri"), dest_uris=uris("dest-uri"),
        src_queue=v.get("src-queue"), src_exchange=v.get("src-exchange"),
        src_exchange_key=v.get("src-exchange-key", ""),
        src_queue_args=dict(v.get("src-queue-args") or {}),
        src_consumer_args=dict(v.get("src-consumer-args") or {}),
        prefetch=int(v.get("src-prefetch-count", v.get("prefetch-count", DEFAULT_PREFETCH))),
        delete_after=v.get("src-delete-after", v.get("delete-after", "never")),
        dest_queue=dest_queue, dest_exchange=v.get("dest-exchange"),
        dest_exchange_key=v.get("dest-exchange-key"),
        dest_queue_args=dict(v.get("dest-queue-args") or {}),
        add_forward_headers=v.get("dest-add-forward-headers",
                                  v.get("add-forward-headers", False)),
        add_timestamp_header=v.get("dest-add-timestamp-header",
                                   v.get("add-timestamp-header", False)),
        publish_properties=dict(v.get("dest-publish-properties",
                                      v.get("publish-properties", {})) or {}),
        ack_mode=v.get("ack-mode", "on-confirm"),
        reconnect_delay=v.get("reconnect-delay", DEFAULT_RECONNECT_DELAY))
