"""Exchanges: pure routing, no I/O.

An exchange maps (routing key, headers) to a set of destinations (queues or, for
exchange-to-exchange bindings, other exchanges). The vhost follows exchange destinations and
alternate exchanges (``vhost.route``); the exchange itself only matches its own bindings.
Bindings are keyed by (destination, routing key, arguments) as in RabbitMQ, so binding twice
is a no-op and unbind needs the same three.
"""
from __future__ import annotations

from functools import lru_cache

TYPES = ("direct", "fanout", "topic", "headers")


def _args_key(arguments: dict | None):
    if not arguments:
        return ()
    return tuple(sorted((k, repr(v)) for k, v in arguments.items()))


class Exchange:
    type = "direct"

    def __init__(self, name: str, durable: bool = True, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = dict(arguments or {})
        # (destination, routing_key, args_key) -> arguments
        self.bindings: dict[tuple, dict] = {}
        self.e2e = False          # has an exchange among its destinations

    @property
    def alternate(self) -> str | None:
        ae = self.arguments.get("alternate-exchange")
        return ae if isinstance(ae, str) else None

    def bind(self, destination, routing_key: str, arguments: dict | None) -> bool:
        key = (destination, routing_key, _args_key(arguments))
        if key in self.bindings:
            return False
        self.bindings[key] = dict(arguments or {})
        self._rebuilt()
        return True

    def unbind(self, destination, routing_key: str, arguments: dict | None) -> bool:
        key = (destination, routing_key, _args_key(arguments))
        if self.bindings.pop(key, None) is None:
            return False
        self._rebuilt()
        return True

    def remove_destination(self, destination) -> int:
        keys = [k for k in self.bindings if k[0] is destination]
        for k in keys:
            del self.bindings[k]
        if keys:
            self._rebuilt()
        return len(keys)

    def has_bindings(self) -> bool:
        return bool(self.bindings)

    def _changed(self) -> None:
        pass

    def _rebuilt(self) -> None:
        self.e2e = any(isinstance(dest, Exchange) for dest, _, _ in self.bindings)
        self._changed()

    def route(self, routing_key: str, headers: dict | None) -> set:
        raise NotImplementedError

    def equivalent(self, type_: str, durable: bool, auto_delete: bool, internal: bool,
                   arguments: dict) -> str | None:
        """None if a redeclare matches, else the name of the first differing field."""
        if type_ != self.type:
            return "type"
        if durable != self.durable:
            return "durable"
        if auto_delete != self.auto_delete:
            return "auto_delete"
        if internal != self.internal:
            return "internal"
        if _args_key(arguments) != _args_key(self.arguments):
            return "arguments"
        return None


class DirectExchange(Exchange):
    type = "direct"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._by_key: dict[str, set] = {}

    def _changed(self) -> None:
        by_key: dict[str, set] = {}
        for dest, key, _ in self.bindings:
            by_key.setdefault(key, set()).add(dest)
        self._by_key = by_key

    def route(self, routing_key, headers):
        return self._by_key.get(routing_key, ())


class FanoutExchange(Exchange):
    type = "fanout"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._all: set = set()

    def _changed(self) -> None:
        self._all = {dest for dest, _, _ in self.bindings}

    def route(self, routing_key, headers):
        return self._all


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic match: words split on '.', '*' is exactly one word, '#' zero or more."""
    return _match(_words(pattern), _words(routing_key))


def _words(key: str) -> tuple:
    return tuple(key.split(".")) if key else ()      # "" has no words (RabbitMQ)


def _match(p: tuple, k: tuple) -> bool:
    if not p:
        return not k
    head = p[0]
    if head == "#":
        rest = p[1:]
        if not rest:
            return True
        return any(_match(rest, k[i:]) for i in range(len(k) + 1))
    if not k:
        return False
    if head == "*" or head == k[0]:
        return _match(p[1:], k[1:])
    return False


class TopicExchange(Exchange):
    type = "topic"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._cache: dict[str, set] = {}
        self._patterns: dict[str, set] = {}

    def _changed(self) -> None:
        patterns: dict[str, set] = {}
        for dest, key, _ in self.bindings:
            patterns.setdefault(key, set()).add(dest)
        self._patterns = patterns
        self._cache = {}

    def route(self, routing_key, headers):
        hit = self._cache.get(routing_key)
        if hit is None:
            hit = set()
            for pattern, dests in self._patterns.items():
                if topic_matches(pattern, routing_key):
                    hit |= dests
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[routing_key] = hit
        return hit


X_MATCH = ("all", "any", "all-with-x", "any-with-x")
_TYPE_NAMES = {bool: "bool", int: "long", float: "double", dict: "table", list: "array",
               bytearray: "binary", type(None): "void"}


def binding_problem(exchange_type: str, arguments: dict | None) -> str | None:
    """Why RabbitMQ's ``validate_binding`` refuses a binding's arguments (406), or None: a
    headers binding's x-match must be a string naming one of the four modes."""
    if exchange_type != "headers" or not arguments or "x-match" not in arguments:
        return None
    mode = arguments["x-match"]
    if isinstance(mode, bytes):                 # a longstr that is not UTF-8
        mode = mode.decode("utf-8", "replace")
    if isinstance(mode, str):
        if mode in X_MATCH:
            return None
        return (f'Invalid x-match field value <<"{mode}">>; expected all, any, all-with-x, '
                f'or any-with-x')
    kind = _TYPE_NAMES.get(type(mode), type(mode).__name__.lower())
    return f"Invalid x-match field type {kind} (value {mode!r}); expected longstr"


def headers_match(binding_args: dict, headers: dict | None) -> bool:
    """RabbitMQ's headers-exchange match (x-match all / any / all-with-x / any-with-x). A
    binding whose x-match is none of them (stored before ``binding_problem`` refused such
    bindings) matches nothing."""
    headers = headers or {}
    mode = binding_args.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    if mode not in X_MATCH:
        return False
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    for key, value in binding_args.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        present = key in headers
        # a void binding value only asks for presence
        ok = present and (value is None or headers[key] == value)
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    return want_all


class HeadersExchange(Exchange):
    type = "headers"

    def route(self, routing_key, headers):
        return {dest for (dest, _, _), args in self.bindings.items() if headers_match(args, headers)}


_CLASSES = {"direct": DirectExchange, "fanout": FanoutExchange, "topic": TopicExchange,
            "headers": HeadersExchange}


def make_exchange(type_: str, name: str, durable: bool = True, auto_delete: bool = False,
                  internal: bool = False, arguments: dict | None = None) -> Exchange:
    return _CLASSES[type_](name, durable, auto_delete, internal, arguments)
