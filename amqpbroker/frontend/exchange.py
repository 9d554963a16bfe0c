"""Exchanges: pure routing, no I/O.

An exchange maps (routing key, headers) to a set of destinations (queues or, for
exchange-to-exchange bindings, other exchanges). The vhost follows exchange destinations and
alternate exchanges (``vhost.route``); the exchange itself only matches its own bindings.
Bindings are keyed by (destination, routing key, arguments) as in RabbitMQ, so binding twice
is a no-op and unbind needs the same three. Each exchange type keeps its own index of the
bindings, updated one binding at a time (``_added`` / ``_removed``): binding is O(1) (O(words)
for a topic), whatever the number of bindings already there.

Topic matching
--------------
A topic exchange keeps its binding keys in a trie of words (RabbitMQ's
``rabbit_exchange_type_topic`` does too), with ``*`` and ``#`` as edges of their own. RabbitMQ
walks the trie depth first, trying every way a ``#`` can split the words: exponential in the
``#``s (``#.#.#.#.#.#.z`` against 40 words took seconds). Here the trie is walked as an NFA:
the set of nodes the words read so far can reach, de-duplicated, advanced one word at a time.
A node reached by a ``#`` edge stays in the set on any word; a node with a ``#`` edge brings
that child in without reading a word (``#`` matches zero words). Each word visits each trie
node at most once, so a publish costs O(words x trie nodes) -- for one binding, words x
binding length -- and the bindings that share a prefix share the work.
"""
from __future__ import annotations

import datetime
import hashlib
import random
import re
import time
import zlib

from .. import errors
from ..federation import hops as hops_rules
from ..partitioner import key_bytes, partition_of
from ..queue_args import amqp_type

TYPES = ("direct", "fanout", "topic", "headers", "x-partitioned", "x-message-deduplication",
         "x-consistent-hash", "x-delayed-message", "x-local-random", "x-random",
         "x-recent-history", "x-modulus-hash", "x-federation-upstream")
LOCAL_RANDOM_TYPE = "x-local-random"
RANDOM_TYPE = "x-random"
RECENT_HISTORY_TYPE = "x-recent-history"
MODULUS_HASH_TYPE = "x-modulus-hash"
FEDERATION_UPSTREAM_TYPE = "x-federation-upstream"


def _args_key(arguments: dict | None):
    if not arguments:
        return ()
    return tuple(sorted((k, repr(v)) for k, v in arguments.items()))


def _incr(counts: dict, key) -> None:
    counts[key] = counts.get(key, 0) + 1


def _decr(counts: dict, key) -> bool:
    """One binding fewer for ``key``; True if that was its last."""
    n = counts[key] - 1
    if n:
        counts[key] = n
        return False
    del counts[key]
    return True


class Exchange:
    type = "direct"
    # route() reads the message's headers (else they need not be decoded to route it)
    reads_headers = False
    keeps_history = False           # an x-recent-history exchange's (RecentHistoryExchange)
    # the property a consistent-hash exchange routes by (the publisher puts it in the
    # headers it routes with: ``with_hash_property``); None for every other type
    hash_property: str | None = None
    # an x-delayed-message exchange holds back a message with a positive ``x-delay``
    delays = False

    @property
    def routes_as(self) -> str:
        """The type whose routing and binding rules this exchange has (its own; a delayed
        exchange's ``x-delayed-type``)."""
        return self.type

    def __init__(self, name: str, durable: bool = True, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        # its policy's alternate exchange (policies.py; the supervisor's copy chooses it,
        # a front-end's is told it with the exchange's ``ExchangeOp``)
        self.policy = None                          # policies.Policy
        self.policy_alternate: str | None = None
        self.arguments = dict(arguments or {})     # sets ``alternate`` too
        # (destination, routing_key, args_key) -> arguments
        self.bindings: dict[tuple, dict] = {}
        self._to_exchanges = 0    # bindings whose destination is an exchange
        # plain attributes, not properties: every publish reads both (vhost.route)
        self.e2e = False          # has an exchange among its destinations

    @property
    def arguments(self) -> dict:
        return self._arguments

    @arguments.setter
    def arguments(self, value: dict) -> None:
        self._arguments = value
        self._set_alternate()

    def set_policy_alternate(self, name: str | None) -> bool:
        """Its policy's alternate exchange; True when the one it routes by changed."""
        before = self.alternate
        self.policy_alternate = name
        self._set_alternate()
        return self.alternate != before

    def _set_alternate(self) -> None:
        """The argument's alternate exchange wins over the policy's (RabbitMQ)."""
        ae = self._arguments.get("alternate-exchange")
        if not isinstance(ae, str):
            ae = self.policy_alternate
        self.alternate: str | None = ae

    def validate_binding(self, routing_key: str, arguments: dict | None, cid: int,
                         mid: int, destination=None) -> None:
        """A new binding's key and arguments (and its destination, a QueueRef or an
        Exchange), checked as the exchange type's ``validate_binding`` (RabbitMQ;
        ``binding_problem``): 406 if refused."""
        problem = binding_problem(self.routes_as, routing_key, arguments)
        if problem is not None:
            raise errors.PreconditionFailed(problem, cid, mid)

    def bind(self, destination, routing_key: str, arguments: dict | None) -> bool:
        key = (destination, routing_key, _args_key(arguments))
        if key in self.bindings:
            return False
        self.bindings[key] = dict(arguments or {})
        self._count(destination, 1)
        self._added(destination, routing_key)
        return True

    def unbind(self, destination, routing_key: str, arguments: dict | None) -> bool:
        key = (destination, routing_key, _args_key(arguments))
        if self.bindings.pop(key, None) is None:
            return False
        self._count(destination, -1)
        self._removed(destination, routing_key)
        return True

    def remove_destination(self, destination) -> int:
        keys = [k for k in self.bindings if k[0] is destination]
        for k in keys:
            del self.bindings[k]
            self._count(destination, -1)
            self._removed(destination, k[1])
        return len(keys)

    def clear_bindings(self) -> None:
        """Remove every binding (the exchange's vhost is deleted)."""
        for key in list(self.bindings):
            del self.bindings[key]
            self._count(key[0], -1)
            self._removed(key[0], key[1])

    def has_bindings(self) -> bool:
        return bool(self.bindings)

    def _count(self, destination, delta: int) -> None:
        if isinstance(destination, Exchange):
            self._to_exchanges += delta
            self.e2e = self._to_exchanges > 0

    def _added(self, destination, routing_key: str) -> None:
        """A binding was added (the same destination and key may already be bound with
        other arguments: indexes count)."""

    def _removed(self, destination, routing_key: str) -> None:
        """A binding was removed (others with the same destination and key may remain)."""

    def route(self, routing_key: str, headers: dict | None):
        """The destinations a message with this key and these headers goes to (an iterable
        the caller must not change)."""
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
        self._by_key: dict[str, dict] = {}      # key -> {destination: bindings}

    def _added(self, destination, routing_key):
        _incr(self._by_key.setdefault(routing_key, {}), destination)

    def _removed(self, destination, routing_key):
        dests = self._by_key[routing_key]
        if _decr(dests, destination) and not dests:
            del self._by_key[routing_key]

    def route(self, routing_key, headers):
        return self._by_key.get(routing_key, ())


class FanoutExchange(Exchange):
    type = "fanout"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._all: dict = {}                    # destination -> bindings

    def _added(self, destination, routing_key):
        _incr(self._all, destination)

    def _removed(self, destination, routing_key):
        _decr(self._all, destination)

    def route(self, routing_key, headers):
        return self._all


class LocalRandomExchange(FanoutExchange):
    """RabbitMQ 4.0's ``x-local-random``: each message goes to one bound queue, picked at
    random among those served by this node (every one on a single node; in a cluster, those
    whose node is this one: a publisher's messages stay on its node). Bindings are of
    classic queues, with an empty key (RabbitMQ's ``validate_binding``: 406 otherwise)."""
    type = LOCAL_RANDOM_TYPE

    def route(self, routing_key, headers):
        local = [q for q in self._all if not q.client.remote]
        if len(local) < 2:
            return local
        return (random.choice(local),)

    def validate_binding(self, routing_key, arguments, cid, mid, destination=None) -> None:
        if routing_key:
            problem = f"Non empty binding '{routing_key}' key not permitted"
        elif destination is None or isinstance(destination, Exchange):
            problem = "Destination not found"
        elif destination.queue_type != "classic":
            problem = (f"Queue type rabbit_{destination.queue_type}_queue not valid for this "
                       f"exchange type")
        else:
            return
        raise errors.PreconditionFailed(problem, cid, mid)


class RandomExchange(FanoutExchange):
    """The ``x-random`` exchange of RabbitMQ's rabbitmq_random_exchange plugin: each message
    goes to one of the exchange's destinations (queues or exchanges), picked at random; the
    routing key and the binding keys are not looked at."""
    type = RANDOM_TYPE

    def route(self, routing_key, headers):
        if len(self._all) < 2:
            return self._all
        return (random.choice(list(self._all)),)


class ModulusHashExchange(FanoutExchange):
    """The ``x-modulus-hash`` exchange of RabbitMQ's rabbitmq_sharding plugin: each message
    goes to one destination, the routing key's hash modulo their number, so one key keeps
    to one queue while the bindings stay (the keys of the bindings are not looked at). The
    hash is CRC32 over the destinations in name order (RabbitMQ's is Erlang's ``phash2``:
    the same spreading, not the same queue for a given key)."""
    type = MODULUS_HASH_TYPE

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._ordered: list | None = None

    def _added(self, destination, routing_key):
        super()._added(destination, routing_key)
        self._ordered = None

    def _removed(self, destination, routing_key):
        super()._removed(destination, routing_key)
        self._ordered = None

    def route(self, routing_key, headers):
        if self._ordered is None:
            self._ordered = sorted(self._all, key=lambda d: d.name)
        ordered = self._ordered
        if len(ordered) < 2:
            return ordered
        return (ordered[zlib.crc32(routing_key.encode()) % len(ordered)],)


class FederationUpstreamExchange(FanoutExchange):
    """The ``x-federation-upstream`` exchange of RabbitMQ's federation plugin: a federation
    link declares one on its upstream, between the federated exchange and the link's queue.
    It routes as fanout the messages the link may still carry (``federation/hops.py``:
    fewer hops than ``x-max-hops``, never back to ``x-downstream-name`` and
    ``x-downstream-vhost``). ``x-max-hops`` is required (406 otherwise, as RabbitMQ)."""
    type = FEDERATION_UPSTREAM_TYPE
    reads_headers = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        hops = self.arguments.get(hops_rules.MAX_HOPS)
        if hops is None:
            raise errors.PreconditionFailed(f"Argument {hops_rules.MAX_HOPS} missing", 40, 10)
        if isinstance(hops, bool) or not isinstance(hops, int):
            raise errors.PreconditionFailed(
                f"Argument {hops_rules.MAX_HOPS} must be of type long", 40, 10)
        self.max_hops = hops
        name = self.arguments.get(hops_rules.DOWNSTREAM_NAME)
        vhost = self.arguments.get(hops_rules.DOWNSTREAM_VHOST)
        self.downstream = (name if isinstance(name, str) else None,
                           vhost if isinstance(vhost, str) else None)

    def route(self, routing_key, headers):
        if hops_rules.should_forward(headers, self.max_hops, *self.downstream):
            return self._all
        return ()


class RecentHistoryExchange(FanoutExchange):
    """The ``x-recent-history`` exchange of RabbitMQ's rabbitmq_recent_history_exchange
    plugin: routes as fanout, and keeps the last ``x-recent-history-length`` messages
    (default 20) routed through it, which a queue or exchange bound to it later gets at once,
    oldest first (a message with header ``x-recent-history-no-store: true`` is not kept). The
    history is the metadata owner's (``supervisor/recent_history.py``): each front-end tells
    it what went through (``KeepRecent``)."""
    type = RECENT_HISTORY_TYPE
    reads_headers = True
    keeps_history = True
    DEFAULT_LENGTH = 20
    NO_STORE = "x-recent-history-no-store"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        n = self.arguments.get("x-recent-history-length")
        if n is None:
            n = self.DEFAULT_LENGTH
        elif isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            shown = errors.erl_binary(n.encode()) if isinstance(n, str) else _erl_term(n)
            raise errors.PreconditionFailed(
                f"Invalid argument {shown}, 'x-recent-history-length' must be a positive "
                f"integer", 40, 10)
        self.length = n

    def keeps(self, headers: dict | None) -> bool:
        return not (headers and headers.get(self.NO_STORE) is True)


def topic_words(key: str) -> list:
    """Words of a routing or binding key, as RabbitMQ splits them: on every '.', so empty
    words are words (``"a..b"`` has three, ``"."`` two), but ``""`` has none."""
    return key.split(".") if key else []


class _Node:
    """A trie node: the binding keys that end here, and the edges to the next word.

    Nodes point only down (no parent, and a closure without the node itself), so the trie
    holds no reference cycle: a pruned branch, or the trie of a deleted exchange, is freed by
    reference counting alone, never left for the cyclic collector (``supervisor/heap.py``).
    ``add`` and ``remove`` keep the path they walked instead of a parent pointer."""
    __slots__ = ("word", "words", "star", "hash", "dests", "closure", "loops")

    def __init__(self, word: str | None, loops: bool):
        self.word = word               # the edge from the parent: a word, '*' or '#'
        self.words: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        self.dests: dict = {}          # destination -> bindings ending here
        self.loops = loops             # reached by '#': stays on any word
        self.closure = ()              # what its '#' edges reach on no word (not itself)

    def child(self, word: str):
        if word == "*":
            return self.star
        if word == "#":
            return self.hash
        return self.words.get(word)

    def empty(self) -> bool:
        return not (self.dests or self.words or self.star or self.hash)


class TopicTrie:
    """Binding keys of one topic exchange, matched in O(words x trie nodes).

    ``steps`` adds up, over all matches, the size of each state set (the start's and one per
    word read): the cost of matching, which tests bound without a clock."""

    def __init__(self):
        self.root = _Node(None, False)
        self.steps = 0

    def add(self, pattern: str, destination) -> None:
        node = self.root
        path = [node]
        for word in topic_words(pattern):
            nxt = node.child(word)
            if nxt is None:
                nxt = _Node(word, word == "#")
                if word == "*":
                    node.star = nxt
                elif word == "#":
                    node.hash = nxt
                    self._reclose(path)
                else:
                    node.words[word] = nxt
            node = nxt
            path.append(node)
        _incr(node.dests, destination)

    def remove(self, pattern: str, destination) -> None:
        node = self.root
        path = [node]
        for word in topic_words(pattern):
            node = node.child(word)
            path.append(node)
        if not _decr(node.dests, destination):
            return
        path.pop()
        while path and node.empty():            # prune the dead branch
            parent, word = path[-1], node.word
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
                self._reclose(path)
            else:
                del parent.words[word]
            node = path.pop()

    @staticmethod
    def _reclose(path: list) -> None:
        """The '#' edge of ``path[-1]`` changed: it and the nodes whose closure runs through
        it (its ancestors along '#' edges) reach a different set on no word."""
        i = len(path) - 1
        while i >= 0:
            node = path[i]
            h = node.hash
            node.closure = (h,) + h.closure if h is not None else ()
            if node.word != "#":
                break
            i -= 1

    def match(self, routing_key: str) -> set:
        """The destinations of every binding key that matches ``routing_key``."""
        root = self.root
        states = {root, *root.closure}
        steps = len(states)
        for word in topic_words(routing_key):
            nxt: set = set()
            for node in states:
                if node.loops:             # '#' eats this word and stays
                    _enter(nxt, node)
                child = node.words.get(word)
                if child is not None:
                    _enter(nxt, child)
                if node.star is not None:
                    _enter(nxt, node.star)
            if not nxt:
                self.steps += steps
                return set()
            states = nxt
            steps += len(states)
        self.steps += steps
        out: set = set()
        for node in states:
            if node.dests:
                out.update(node.dests)
        return out


def _enter(states: set, node: _Node) -> None:
    """Add a node and its no-word closure to ``states``; a node already there brought the
    rest of the closure (a suffix of this one) with it."""
    if node in states:
        return
    states.add(node)
    for other in node.closure:
        if other in states:
            return
        states.add(other)


class TopicExchange(Exchange):
    type = "topic"
    CACHE_KEYS = 10000      # routing keys whose result is remembered

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.trie = TopicTrie()
        self._cache: dict[str, set] = {}

    def _added(self, destination, routing_key):
        self.trie.add(routing_key, destination)
        self._cache = {}

    def _removed(self, destination, routing_key):
        self.trie.remove(routing_key, destination)
        self._cache = {}

    def route(self, routing_key, headers):
        hit = self._cache.get(routing_key)
        if hit is None:
            hit = self.trie.match(routing_key)
            if len(self._cache) >= self.CACHE_KEYS:
                self._cache.clear()
            self._cache[routing_key] = hit
        return hit


X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def binding_problem(exchange_type: str, routing_key: str, arguments: dict | None) -> str | None:
    """Why an exchange of this type refuses a binding (406), worded as the type's
    ``validate_binding`` prints it, or None: a headers binding's x-match (a string naming
    one of the four modes), a consistent-hash binding's key (its weight)."""
    if exchange_type == CHASH_TYPE:
        return weight_problem(routing_key)
    if exchange_type != "headers" or not arguments or "x-match" not in arguments:
        return None
    mode = arguments["x-match"]
    if isinstance(mode, str):
        if mode in X_MATCH_MODES:
            return None
        return (f"Invalid x-match field value {errors.erl_binary(mode.encode())}; expected "
                f"all, any, all-with-x, or any-with-x")
    shown = errors.erl_binary(bytes(mode)) if isinstance(mode, (bytes, bytearray)) \
        else _erl_term(mode)
    return f"Invalid x-match field type {amqp_type(mode)} (value {shown}); expected longstr"


def _erl_term(value) -> str:
    """Roughly Erlang's ``~p`` of a decoded field value, for reply texts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "undefined"
    return repr(value)


def headers_match(binding_args: dict, headers: dict | None) -> bool:
    """RabbitMQ's headers-exchange match (x-match all / any / all-with-x / any-with-x). A
    binding whose x-match is none of them (stored before ``binding_problem`` refused such
    bindings) matches nothing."""
    headers = headers or {}
    mode = binding_args.get("x-match", "all")
    if isinstance(mode, (bytes, bytearray)):
        mode = mode.decode(errors="replace")
    if not isinstance(mode, str):
        mode = "all"            # only bindings stored before validate_binding can have one
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
    reads_headers = True

    def route(self, routing_key, headers):
        return {dest for (dest, _, _), args in self.bindings.items() if headers_match(args, headers)}


class PartitionedExchange(Exchange):
    """A topic (``x-partitioned``): ``x-partitions`` partition queues ``NAME-0`` ...
    bound with keys ``"0"`` ... (the supervisor makes them, ``supervisor/topics.py``).

    A message goes to partition ``(murmur2(key) & 0x7fffffff) % x-partitions``
    (``partitioner.py``, Kafka's default partitioner), the key being header
    ``x-partition-key`` when present, else the routing key; that is the destination bound
    with key ``str(partition)``. A message with neither (an empty routing key, no header)
    goes round-robin over the partitions, counted per exchange in this process (so per
    front-end process). Other bindings are kept, as a direct exchange keeps them, but only
    the partition keys are ever routed to."""
    type = "x-partitioned"
    reads_headers = True
    PARTITION_KEY = "x-partition-key"
    MAX_PARTITIONS = 1000   # RabbitMQ's default max_super_stream_partitions
    CACHE_KEYS = 10000      # keys whose partition is remembered

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._by_key: dict[str, dict] = {}      # binding key -> {destination: bindings}
        self._cache: dict = {}                  # key (str or bytes) -> partition, for _cached_n
        self._cached_n = 0
        self._next = 0                          # the next keyless message's partition

    @property
    def partitions(self) -> int:
        n = self.arguments.get("x-partitions")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0

    def _added(self, destination, routing_key):
        _incr(self._by_key.setdefault(routing_key, {}), destination)

    def _removed(self, destination, routing_key):
        dests = self._by_key[routing_key]
        if _decr(dests, destination) and not dests:
            del self._by_key[routing_key]

    def partition(self, routing_key: str, headers: dict | None) -> int | None:
        """The partition a message goes to, or None while the topic has none."""
        n = self.partitions
        if not n:
            return None
        if headers and self.PARTITION_KEY in headers:
            key = headers[self.PARTITION_KEY]
            if not isinstance(key, (str, bytes)):
                return partition_of(key_bytes(key), n)
        elif routing_key:
            key = routing_key
        else:
            i = self._next % n
            self._next = i + 1
            return i
        if n != self._cached_n:
            self._cache, self._cached_n = {}, n
        i = self._cache.get(key)
        if i is None:                   # murmur2 in Python: ~10 us a key, so remembered
            i = partition_of(key_bytes(key), n)
            if len(self._cache) >= self.CACHE_KEYS:
                self._cache.clear()
            self._cache[key] = i
        return i

    def route(self, routing_key, headers):
        i = self.partition(routing_key, headers)
        return () if i is None else self._by_key.get(str(i), ())



# ================================================================ x-message-deduplication
DEDUP_TYPE = "x-message-deduplication"
DEDUP_HEADER = "x-deduplication-header"


def _plugin_text(first: str, indent: int, rest: str) -> str:
    """The plugin's reply texts are Elixir strings continued with a backslash, which keeps
    the next source line's indentation: reproduced, as they go on the wire."""
    return first + " " * indent + rest


def _plugin_integer(value, name: str, first: str, indent: int, rest: str) -> int:
    """rabbitmq-message-deduplication's ``validate``: an integer > 0, or a longstr that
    Elixir's ``Integer.parse`` reads a leading integer from."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode(errors="replace")
    if isinstance(value, str):
        digits = re.match(r"[+-]?[0-9]+", value)
        if digits is None:
            raise errors.PreconditionFailed(_plugin_text(first, 22, rest), 40, 10)
        return int(digits.group())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise errors.PreconditionFailed(_plugin_text(first, indent, rest), 40, 10)
    return value


class DeduplicationExchange(FanoutExchange):
    """The exchange type of the RabbitMQ message-deduplication plugin: routes as fanout, but
    a message whose key was routed before (within ``x-cache-ttl`` ms, and while the cache of
    ``x-cache-size`` keys still holds it) is routed nowhere: with confirms it is confirmed,
    as the plugin's. The key is header ``x-deduplication-header``, else (ours) the
    ``message_id`` property (the channel passes it as that header: ``route_headers``); a
    message with neither is always routed. A per-message ``x-cache-ttl`` header overrides the
    exchange's. A full cache drops expired keys, then the oldest (the plugin drops a random
    one). The cache is the metadata owner's (the supervisor's copy of the exchange, asked by
    every front-end: ``DedupSeen``), in memory (``x-cache-persistence: disk`` is accepted,
    as the plugin's, and kept in memory)."""
    type = DEDUP_TYPE
    reads_headers = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        args = self.arguments
        self.cache_size = max(1, _plugin_integer(
            args.get("x-cache-size"), "x-cache-size", "Missing or invalid argument, ", 10,
            "'x-cache-size' must be an integer greater than 0"))  # "-5" parses: 1 kept
        ttl = args.get("x-cache-ttl")
        self.cache_ttl = None if ttl is None else _plugin_integer(
            ttl, "x-cache-ttl", "Invalid argument, ", 13,
            "'x-cache-ttl' must be an integer greater than 0")
        persistence = args.get("x-cache-persistence")
        if isinstance(persistence, (bytes, bytearray)):
            persistence = bytes(persistence).decode(errors="replace")
        if persistence is not None and persistence not in ("disk", "memory"):
            raise errors.PreconditionFailed(_plugin_text(
                "Invalid argument, ", 13,
                "'x-cache-persistence' must be either 'disk' or 'memory'"), 40, 10)
        self.cache: dict = {}               # key -> expiry (ms, monotonic) or None

    @staticmethod
    def route_headers(headers: dict | None, message_id) -> dict | None:
        """The headers to route with: the message_id stands in for a missing
        x-deduplication-header."""
        if message_id is None or (headers and DEDUP_HEADER in headers):
            return headers
        return {**(headers or {}), DEDUP_HEADER: message_id}

    @staticmethod
    def key_of(headers: dict | None):
        """(the message's de-duplication key or None, its ``x-cache-ttl`` header or None)."""
        key = headers.get(DEDUP_HEADER) if headers else None
        if isinstance(key, (bytearray, list, dict)):
            key = repr(key)
        return key, (headers.get("x-cache-ttl") if key is not None else None)

    def seen(self, key, ttl=None) -> bool:
        """Whether ``key`` is a duplicate (in the cache and not expired); if not, it is
        cached now, for ``ttl`` ms (a per-message ``x-cache-ttl``) or the exchange's."""
        now = time.monotonic() * 1000
        expiry = self.cache.get(key, 0)
        if expiry is None or expiry > now:
            return True
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            ttl = self.cache_ttl
        self.cache.pop(key, None)
        if len(self.cache) >= self.cache_size:
            self._make_room(now)
        self.cache[key] = None if ttl is None else now + ttl
        return False

    def route(self, routing_key, headers):
        """As fanout; a keyed message is routed nowhere if it is a duplicate. (A channel asks
        the metadata owner instead, ``seen`` on its copy, so that one cache serves every
        front-end; it then routes the message with its key taken off.)"""
        key, ttl = self.key_of(headers)
        if key is not None and self.seen(key, ttl):
            return ()                      # a duplicate
        return self._all

    def _make_room(self, now: float) -> None:
        cache = self.cache
        for k in [k for k, e in cache.items() if e is not None and e <= now]:
            del cache[k]
        while len(cache) >= self.cache_size:
            del cache[next(iter(cache))]


# ================================================================ x-consistent-hash
CHASH_TYPE = "x-consistent-hash"
CHASH_PROPERTIES = ("correlation_id", "message_id", "timestamp")
_WEIGHT = re.compile(r"[+-]?[0-9]+")        # Erlang's list_to_integer: no spaces


def weight_problem(routing_key: str) -> str | None:
    """Why a consistent-hash binding's key is not a weight, as the plugin words it."""
    if not _WEIGHT.fullmatch(routing_key):
        return f"The binding key must be an integer: {errors.erl_binary(routing_key.encode())}"
    if int(routing_key) < 1:
        return "The binding key must be greater than 0"
    return None


def weight(routing_key: str) -> int:
    """A consistent-hash binding's buckets (none for a key that is not a weight: a
    binding no check saw, e.g. made by another broker)."""
    return int(routing_key) if weight_problem(routing_key) is None else 0


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash: the bucket (0 .. buckets-1) of a 64-bit
    key; a bucket added at the end takes 1/n of the keys from the others, and moves no
    other key."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def hash_key(value) -> int:
    """A value's 64-bit key, the same in every process (``hash()`` is not)."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif value is None:
        data = b""
    else:
        data = str(value).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHashExchange(Exchange):
    """The exchange type of RabbitMQ's consistent-hash plugin: each message goes to exactly
    one destination, chosen by a hash of its routing key (or of header ``hash-header``, or
    of property ``hash-property``: correlation_id, message_id or timestamp), so one key's
    messages go to one queue while the bindings stay. A binding's key is its weight (an
    integer > 0): it adds that many buckets, in the order the bindings were made, and a
    message goes to the bucket ``jump_hash`` picks among all of them. With the plugin's
    rules: the same validation and reply texts; a binding removed takes its buckets out and
    the later ones move down; a message without the header or property still goes
    somewhere (its value hashed as empty). The hash is ours (BLAKE2b, then jump hash), so
    which queue a given key lands on differs from RabbitMQ's, not how keys spread."""
    type = CHASH_TYPE

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        args = self.arguments
        header, prop = args.get("hash-header"), args.get("hash-property")
        for name, value in (("hash-header", header), ("hash-property", prop)):
            if value is not None and not isinstance(value, str):
                # the plugin's own check crashes on it (541 INTERNAL_ERROR): ours says why
                raise errors.PreconditionFailed(f"{name} must be a string", 40, 10)
        if header is not None and prop is not None:
            raise errors.PreconditionFailed(
                "hash-header and hash-property are mutually exclusive", 40, 10)
        if prop is not None and prop not in CHASH_PROPERTIES:
            raise errors.PreconditionFailed(f"Unsupported property: {prop}", 40, 10)
        self.hash_header: str | None = header
        self.hash_property = prop
        self.reads_headers = header is not None or prop is not None
        self._buckets: list = []            # destination per bucket

    def _added(self, destination, routing_key):
        self._buckets.extend([destination] * weight(routing_key))

    def _removed(self, destination, routing_key):
        self._buckets = [dest for (dest, key, _) in self.bindings for _ in range(weight(key))]

    @staticmethod
    def property_key(prop: str) -> str:
        """The routing header a channel puts a message's ``hash-property`` under."""
        return "\0" + prop

    def route(self, routing_key, headers):
        buckets = self._buckets
        if not buckets:
            return ()
        if self.hash_header is not None:
            value = headers.get(self.hash_header) if headers else None
        elif self.hash_property is not None:
            value = headers.get(self.property_key(self.hash_property)) if headers else None
        else:
            value = routing_key
        return (buckets[jump_hash(hash_key(value), len(buckets))],)


def with_hash_property(ex: Exchange, headers: dict | None, properties) -> dict | None:
    """The headers to route with through ``ex``: for a consistent-hash exchange that hashes
    a property, the message's ``hash-property`` put in (``properties``: decoded properties,
    or the API's dict of them; a timestamp as its seconds, however it came)."""
    prop = ex.hash_property
    if prop is None:
        return headers
    value = (properties.get(prop) if isinstance(properties, dict)
             else getattr(properties, prop, None))
    if isinstance(value, datetime.datetime):
        value = int(value.replace(tzinfo=value.tzinfo or datetime.timezone.utc).timestamp())
    return {**(headers or {}), ConsistentHashExchange.property_key(prop): value}


# ================================================================ x-delayed-message
DELAYED_TYPE = "x-delayed-message"
DELAY_HEADER = "x-delay"
MAX_DELAY = 4294967295          # the plugin's limit (Erlang's longest timer): longer is no delay
# the plugin's text, as it goes on the wire (its source joins two strings without a space)
DELAYED_TYPE_MISSING = ("Invalid argument, 'x-delayed-type' must bean existing exchnage "
                        "type")


def delay_of(headers: dict | None) -> int | None:
    """The plugin's ``get_delay``: ``x-delay`` as milliseconds (an integer; a string of
    one; a float, truncated), or None when the message goes on at once (no header, another
    type, not above 0, or above ``MAX_DELAY``)."""
    value = headers.get(DELAY_HEADER) if headers else None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode(errors="replace")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return None
    elif not isinstance(value, int):
        try:
            value = int(value)          # float, Decimal: truncated
        except (TypeError, ValueError, OverflowError):
            return None
    return value if 0 < value <= MAX_DELAY else None


class DelayedExchange(Exchange):
    """The exchange type of RabbitMQ's rabbitmq-delayed-message-exchange plugin: it routes as
    its ``x-delayed-type`` (direct, fanout, topic, headers or x-consistent-hash: the class is
    made from that type's, ``delayed_class``), but a message whose ``x-delay`` header is a
    positive number of milliseconds (``delay_of``) is held that long first, by the metadata
    owner (``supervisor/delayed.py``), then routed by the bindings there are then, its
    ``x-delay`` made negative (the plugin's mark that it was delayed, which also keeps it
    from being held again). A publish is confirmed once the held message is on disk."""
    type = DELAYED_TYPE
    delays = True
    reads_headers = True


_CLASSES = {"direct": DirectExchange, "fanout": FanoutExchange, "topic": TopicExchange,
            "headers": HeadersExchange, "x-partitioned": PartitionedExchange,
            DEDUP_TYPE: DeduplicationExchange, CHASH_TYPE: ConsistentHashExchange,
            LOCAL_RANDOM_TYPE: LocalRandomExchange, RANDOM_TYPE: RandomExchange,
            RECENT_HISTORY_TYPE: RecentHistoryExchange, MODULUS_HASH_TYPE: ModulusHashExchange,
            FEDERATION_UPSTREAM_TYPE: FederationUpstreamExchange}


# the types an x-delayed-message exchange may route as: the plugin takes any registered
# type; the de-duplication and partitioned types route in ways of their own, so not here
DELAYABLE = ("direct", "fanout", "topic", "headers", CHASH_TYPE)
_DELAYED: dict = {}


def delayed_class(inner_type: str) -> type:
    """The class of an x-delayed-message exchange that routes as ``inner_type``."""
    cls = _DELAYED.get(inner_type)
    if cls is None:
        inner = _CLASSES[inner_type]
        cls = _DELAYED[inner_type] = type(f"Delayed{inner.__name__}", (DelayedExchange, inner),
                                          {"routes_as": inner_type})
    return cls


def _delayed_type(arguments: dict | None) -> str:
    """``x-delayed-type``, checked as the plugin's ``validate``: a string naming an exchange
    type (406 without one; an unknown type is 503 "unknown exchange type", a connection
    error, as RabbitMQ's ``check_type``)."""
    inner = (arguments or {}).get("x-delayed-type")
    if isinstance(inner, (bytes, bytearray)):
        inner = bytes(inner).decode(errors="replace")
    if not isinstance(inner, str) or inner == DELAYED_TYPE:
        raise errors.PreconditionFailed(DELAYED_TYPE_MISSING, 40, 10)
    if inner not in TYPES:
        raise errors.CommandInvalid(f"unknown exchange type '{inner}'", 40, 10)
    if inner not in DELAYABLE:
        raise errors.PreconditionFailed(
            f"Invalid argument, 'x-delayed-type' {inner} is not one this broker delays "
            f"(it takes {', '.join(DELAYABLE)})", 40, 10)
    return inner


def make_exchange(type_: str, name: str, durable: bool = True, auto_delete: bool = False,
                  internal: bool = False, arguments: dict | None = None) -> Exchange:
    cls = delayed_class(_delayed_type(arguments)) if type_ == DELAYED_TYPE else _CLASSES[type_]
    return cls(name, durable, auto_delete, internal, arguments)
