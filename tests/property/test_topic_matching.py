"""The topic exchange's trie matcher against the reference (``amqpbroker.testing.topic``, a
regular expression checked against RabbitMQ by ``interop/test_topic_routing.py``), and the
bound on its work: (words + 1) x (trie nodes), counted in steps rather than timed."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from amqpbroker.frontend.exchange import TopicExchange, TopicTrie, topic_words
from amqpbroker.testing.topic import topic_matches

# small alphabets, so that words repeat and wildcards meet the words they could match; '.'
# gives empty words, and '*' / '#' inside a word ("a*") are plain characters
binding_keys = hs.text(alphabet="ab.*#", max_size=9)
routing_keys = hs.text(alphabet="ab.*#", max_size=9)
SETTINGS = settings(max_examples=400, deadline=None)


@SETTINGS
@given(binding_keys, routing_keys)
def test_one_binding_matches_as_the_reference(binding, key):
    trie = TopicTrie()
    trie.add(binding, "q")
    assert (trie.match(key) == {"q"}) == topic_matches(binding, key)


@SETTINGS
@given(binding_keys, routing_keys)
def test_work_is_bounded_by_words_times_binding_length(binding, key):
    trie = TopicTrie()
    trie.add(binding, "q")
    trie.match(key)
    assert trie.steps <= (len(topic_words(key)) + 1) * (len(topic_words(binding)) + 1)


# an operation on one exchange: bind or unbind (destination, binding key, arguments), or
# remove a destination with all its bindings (a deleted queue)
operations = hs.lists(hs.one_of(
    hs.tuples(hs.sampled_from(["bind", "unbind"]), hs.integers(0, 3), binding_keys,
              hs.sampled_from([None, {"x": 1}])),
    hs.tuples(hs.just("remove"), hs.integers(0, 3), hs.just(""), hs.just(None)),
), max_size=25)


@SETTINGS
@given(operations, hs.lists(routing_keys, min_size=1, max_size=8))
def test_exchange_routes_as_the_reference_after_binds_and_unbinds(ops, keys):
    """Bindings come and go (the trie grows, counts and prunes); routing, cached or not, is
    always what the bindings left say."""
    ex = TopicExchange("t")
    bound: set = set()            # (destination, binding key, arguments)
    for op, dest, key, args in ops:
        if op == "bind":
            ex.bind(dest, key, args)
            bound.add((dest, key, repr(args)))
        elif op == "unbind":
            ex.unbind(dest, key, args)
            bound.discard((dest, key, repr(args)))
        else:
            ex.remove_destination(dest)
            bound = {b for b in bound if b[0] != dest}
        check_trie(ex.trie)
        for rk in keys:
            want = {d for d, k, _ in bound if topic_matches(k, rk)}
            assert set(ex.route(rk, None)) == want, (op, dest, key, rk)
    if not bound:
        assert ex.trie.root.empty(), "unbinding everything leaves an empty trie"


def check_trie(trie: TopicTrie) -> None:
    """Every node but the root leads to a binding (removals prune), every node's no-word
    closure is its '#' child plus that child's closure (adds and prunes keep it so), and each
    node is reached once, by the edge its ``word`` names (the trie is a tree)."""
    todo = [trie.root]
    seen = set()
    while todo:
        node = todo.pop()
        assert id(node) not in seen
        seen.add(id(node))
        assert node is trie.root or not node.empty(), f"dead node at {node.word!r}"
        assert node.closure == ((node.hash,) + node.hash.closure if node.hash else ())
        for word, child in node.words.items():
            assert child.word == word
        assert node.star is None or node.star.word == "*"
        assert node.hash is None or node.hash.word == "#"
        todo.extend(list(node.words.values()) + [c for c in (node.star, node.hash) if c])


def test_pathological_binding_is_linear_in_the_words():
    """The issue's case: '#.#.#.#.#.#.z' against 40 words held the node for 5 s, ~8x more per
    '#'. Twenty '#'s against 120 words (a 239-byte key) now cost at most 121 x 22 steps."""
    for hashes in (6, 20):
        binding = ".".join(["#"] * hashes + ["z"])
        for words in (40, 120):
            trie = TopicTrie()
            trie.add(binding, "q")
            assert trie.match(".".join(["w"] * (words - 1) + ["z"])) == {"q"}
            assert trie.match(".".join(["w"] * words)) == set()
            bound = (words + 1) * (hashes + 2)
            assert trie.steps <= 2 * bound, (hashes, words, trie.steps)


def test_bindings_sharing_a_prefix_share_the_work():
    """10,000 bindings under one prefix: a key visits its own path, not every binding."""
    trie = TopicTrie()
    for i in range(10_000):
        trie.add(f"stock.{i % 100}.{i}", i)
    trie.add("stock.*.#", "all")
    trie.steps = 0
    assert trie.match("stock.7.4207") == {4207, "all"}
    assert trie.steps <= 4 * 4
