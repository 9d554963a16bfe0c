"""What an AMQP 1.0 link's address names, as RabbitMQ's AMQP 1.0 support reads it: the
3.x plugin's forms (``rabbitmq_amqp1_0``'s README) and RabbitMQ 4.0's "v2" ones, no I/O.

Targets (where a sender link's messages go) -> (exchange, routing key, queue to declare):

    /exchange/NAME/KEY     exchange NAME, routing key KEY
    /exchange/NAME         exchange NAME, the message's subject as the routing key
    /topic/KEY             amq.topic, routing key KEY
    /amq/queue/NAME        the default exchange, routing key NAME (the queue must exist)
    /queue/NAME            the same, the queue declared first (durable if the terminus is)
    /queue                 the default exchange, the message's subject as the routing key
    /exchanges/NAME/KEY    4.0: exchange NAME, routing key KEY (percent-encoded)
    /exchanges/NAME        4.0: exchange NAME, the empty routing key
    /queues/NAME           4.0: the default exchange, routing key NAME (the queue must exist)
    null                   each message's ``to`` is one of the above

Sources (what a receiver link consumes) -> (queue, queue to declare, (exchange, key) to bind
a new exclusive queue to):

    /queue/NAME            NAME, declared first (durable if the terminus is)
    /amq/queue/NAME        NAME (must exist)
    /queues/NAME           4.0: NAME (must exist)
    /exchange/NAME/KEY     a new exclusive queue bound to NAME with KEY
    /topic/KEY             a new exclusive queue bound to amq.topic with KEY

A message's subject and ``to`` come from ``message.incoming``; an address of none of these
forms is ``BadAddress`` (the link is refused with ``amqp:invalid-field``).

A source's filter ``rabbitmq:stream-offset-spec`` (the plugin's, for reading a stream) is
the consumer's ``x-stream-offset``: a timestamp (ms, to whole seconds as AMQP 0-9-1 has
them), a string (``first``, ``last``, ``next``, an interval like ``10m``) or an integer
offset; other filters are ignored, as the plugin ignores them.
"""
from __future__ import annotations

import datetime
import urllib.parse

from .sql_filter import SqlError, SqlFilter

SUBJECT = None          # the routing key: the message's subject


class BadAddress(ValueError):
    pass


def _v2(part: str, address: str) -> str:
    name = urllib.parse.unquote(part)
    if not name:
        raise BadAddress(f"address '{address}': an empty name")
    return name


def _v2_exchange(part: str, address: str) -> str:
    """A 4.0 address's exchange: not the default exchange (``/queues/NAME`` is for that)."""
    name = _v2(part, address)
    if name == "amq.default":
        raise BadAddress(f"address '{address}': the default exchange is '/queues/NAME'")
    return name


def existing_queue(address) -> str | None:
    """The queue a 4.0 target ``/queues/NAME`` names: it must exist when the link attaches,
    as RabbitMQ 4 checks (3.10's ``/amq/queue/NAME`` is not checked, as the plugin's)."""
    if isinstance(address, str) and address.startswith("/queues/"):
        return target(address)[1]
    return None


def target(address) -> tuple:
    """(exchange, routing key or SUBJECT, queue to declare or None); exchange None: the
    address is each message's ``to``."""
    if address is None:
        return None, SUBJECT, None
    parts = address.split("/")
    if len(parts) < 2 or parts[0] != "":
        raise BadAddress(f"address '{address}' is not one RabbitMQ takes")
    kind, rest = parts[1], parts[2:]
    if kind == "exchange" and len(rest) == 2 and rest[0]:
        return rest[0], rest[1], None
    if kind == "exchange" and len(rest) == 1 and rest[0]:
        return rest[0], SUBJECT, None
    if kind == "topic" and len(rest) == 1:
        return "amq.topic", rest[0], None
    if kind == "amq" and len(rest) == 2 and rest[0] == "queue" and rest[1]:
        return "", rest[1], None
    if kind == "queue" and len(rest) == 1 and rest[0]:
        return "", rest[0], rest[0]
    if kind == "queue" and not rest:
        return "", SUBJECT, None
    if kind == "exchanges" and len(rest) == 2:
        return _v2_exchange(rest[0], address), urllib.parse.unquote(rest[1]), None
    if kind == "exchanges" and len(rest) == 1:        # 4.0: the empty routing key
        return _v2_exchange(rest[0], address), "", None
    if kind == "queues" and len(rest) == 1:
        return "", _v2(rest[0], address), None
    raise BadAddress(f"address '{address}' is not one RabbitMQ takes")


def of_to(to) -> tuple[str, str]:
    """(exchange, routing key) of a message's ``to`` (for a link with a null target)."""
    if not to:
        raise BadAddress("anonymous terminus requires 'to' address to be set")  # 4.0's
    try:
        exchange, key, _ = target(to)
    except BadAddress:
        raise BadAddress(f"bad 'to' address string: {to}") from None
    if exchange is None or key is SUBJECT:
        raise BadAddress(f"bad 'to' address string: {to}")
    return exchange, key


def source(address) -> tuple:
    """(queue or None, queue to declare or None, (exchange, key) to bind or None)."""
    if not address:
        raise BadAddress("a receiving link needs a source address")
    parts = address.split("/")
    if len(parts) >= 2 and parts[0] == "":
        kind, rest = parts[1], parts[2:]
        if kind == "queue" and len(rest) == 1 and rest[0]:
            return rest[0], rest[0], None
        if kind == "amq" and len(rest) == 2 and rest[0] == "queue" and rest[1]:
            return rest[1], None, None
        if kind == "queues" and len(rest) == 1:
            return _v2(rest[0], address), None, None
        if kind == "exchange" and len(rest) == 2 and rest[0]:
            return None, None, (rest[0], rest[1])
        if kind == "topic" and len(rest) == 1:
            return None, None, ("amq.topic", rest[0])
    raise BadAddress(f"address '{address}' is not one RabbitMQ takes")


def _filters(filters: tuple):
    """(name, value) of each filter of a source's ``filter`` map, a described value's
    descriptor name or else its key naming it."""
    if filters[0] != "map":
        return
    for key, value in filters[1]:
        name = _filter_name(key, value)
        if name is not None:
            yield name, value[1][1] if value[0] == "described" else value


def _filter_name(key: tuple, value: tuple) -> str | None:
    if key[0] not in ("symbol", "utf8"):
        return None
    if value[0] == "described" and value[1][0][0] == "symbol":
        return value[1][0][1]                   # a filter given as a described value
    return key[1]


SQL_FILTER = "amqp:sql-filter"


def message_filter(filters: tuple) -> tuple["MessageFilter | SqlFilter | None", str | None]:
    """A receiver's filter on what it gets (RabbitMQ 4.1's property filters, or 4.2's SQL
    filter expression), and why the SQL filter was refused, if it was: RabbitMQ leaves a
    filter it refuses out of its attach and goes on without it (a client library then
    detaches, reporting the filter refused)."""
    properties = MessageFilter.of(filters)
    sql = [value for name, value in _filters(filters) if name == SQL_FILTER]
    if not sql:
        return properties, None
    if properties is not None:
        return properties, "a property filter and a SQL filter are mutually exclusive"
    kind, text = sql[0]
    if kind not in ("utf8", "symbol"):
        return None, f"a SQL filter is a string, not {kind}"
    try:
        return SqlFilter(text), None
    except SqlError as exc:
        return None, f"SQL filter {text[:200]!r}: {exc}"


def volatile(source: tuple) -> bool:
    """A source asking for RabbitMQ 4.2's volatile queue (its capabilities hold
    ``rabbitmq:volatile-queue``): what a direct reply-to receiver attaches with."""
    capabilities = source[1]["capabilities"]
    if capabilities[0] in ("array", "list"):
        return ("symbol", "rabbitmq:volatile-queue") in capabilities[1]
    return capabilities == ("symbol", "rabbitmq:volatile-queue")


_ADDRESS, _FILTER = 0, 7     # a source terminus's fields (as frames.COMPOSITES lists them)


def dynamic_source(source: tuple, address: str) -> tuple:
    """A dynamic source terminus (a tagged described list) given ``address``: the source an
    attach answers a dynamic one with."""
    return _with_field(source, _ADDRESS, ("utf8", address))


def source_without(source: tuple, name: str) -> tuple:
    """A source terminus (a tagged described list) without filter ``name`` in its filter
    map: the source an attach answers with when that filter was refused."""
    filters = _field(source, _FILTER)
    if filters[0] != "map":
        return source
    return _with_field(source, _FILTER, ("map", [(k, v) for k, v in filters[1]
                                                 if _filter_name(k, v) != name]))


def _field(terminus: tuple, i: int) -> tuple:
    inner = terminus[1][1]
    return inner[1][i] if inner[0] == "list" and len(inner[1]) > i else ("null", None)


def _with_field(terminus: tuple, i: int, value: tuple) -> tuple:
    descriptor, inner = terminus[1]
    items = list(inner[1]) if inner[0] == "list" else []
    items += [("null", None)] * (i + 1 - len(items))
    items[i] = value
    return ("described", (descriptor, ("list", items)))


def consumer_arguments(filters: tuple) -> dict:
    """The ``basic.consume`` arguments a source's ``filter`` map asks for: where a stream
    is read from, and its filter values (RabbitMQ's ``rabbitmq:stream-filter``, a string
    or a list of them, and ``rabbitmq:stream-match-unfiltered``)."""
    out = {}
    for key, (vkind, v) in _filters(filters):
        if key == "rabbitmq:stream-offset-spec":
            if vkind == "timestamp":
                out["x-stream-offset"] = datetime.datetime.fromtimestamp(
                    v // 1000, datetime.timezone.utc)
            elif vkind in ("utf8", "symbol") or (isinstance(v, int)
                                                 and not isinstance(v, bool)):
                out["x-stream-offset"] = v
        elif key == "rabbitmq:stream-filter":
            if vkind in ("utf8", "symbol"):
                out["x-stream-filter"] = [v]
            elif vkind in ("list", "array"):
                out["x-stream-filter"] = [i[1] for i in v if i[0] in ("utf8", "symbol")]
        elif key == "rabbitmq:stream-match-unfiltered" and vkind == "boolean":
            out["x-stream-match-unfiltered"] = v
    return out


# the property filter's names -> the properties section's fields, in order
_PROPERTIES = ("message-id", "user-id", "to", "subject", "reply-to", "correlation-id",
               "content-type", "content-encoding", "absolute-expiry-time", "creation-time",
               "group-id", "group-sequence", "reply-to-group-id")


class MessageFilter:
    """RabbitMQ 4.1's property filters of a stream's consumer (AMQP Filter Expressions
    1.0, section 4.2.4): ``amqp:properties-filter`` (field name -> value) and
    ``amqp:application-properties-filter`` (key -> value). A message passes when every
    entry matches: the field is there and equal, and a string value ``&p:X`` matches what
    starts with X, ``&s:X`` what ends with X (``&&`` stands for ``&``)."""

    def __init__(self, properties: dict, application: dict):
        self.properties = properties            # field index -> wanted value
        self.application = application          # key -> wanted value

    @classmethod
    def of(cls, filters: tuple) -> "MessageFilter | None":
        properties, application = {}, {}
        for key, (vkind, v) in _filters(filters):
            if key == "amqp:properties-filter" and vkind == "map":
                for (_, name), (_, want) in v:
                    if name in _PROPERTIES:
                        properties[_PROPERTIES.index(name)] = want
            elif key == "amqp:application-properties-filter" and vkind == "map":
                application = {name: want for (_, name), (_, want) in v}
        return cls(properties, application) if properties or application else None

    def accepts(self, header: list, properties: list, application: dict) -> bool:
        """``properties``: the message's properties list (typed values), ``application``:
        its application properties (key -> plain value); the header is not looked at."""
        for i, want in self.properties.items():
            have = properties[i][1] if i < len(properties) else None
            if not _matches(have, want):
                return False
        return all(_matches(application.get(k), want) for k, want in self.application.items())


def _matches(have, want) -> bool:
    if have is None:
        return False
    if isinstance(want, str) and isinstance(have, str):
        if want.startswith("&p:"):
            return have.startswith(want[3:])
        if want.startswith("&s:"):
            return have.endswith(want[3:])
        if want.startswith("&&"):
            want = want[1:]
    if isinstance(want, bytes) and isinstance(have, str):
        have = have.encode()
    return have == want
