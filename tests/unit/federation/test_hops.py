"""What federated messages and propagated bindings carry (federation/hops.py), and which
upstreams a policy gives (federation/upstreams.py), as RabbitMQ 3.10's federation plugin
works them out; the brokers' behaviour is in tests/integration/test_federation.py."""
from __future__ import annotations

from amqpbroker.federation import hops, upstreams


def entry(cluster: str, vhost: str = "/") -> dict:
    return {"uri": "amqp://h", "exchange": "x", "redelivered": False,
            "cluster-name": cluster, "vhost": vhost}


def test_a_message_is_forwarded_until_max_hops_and_never_back_where_it_was():
    assert hops.should_forward(None, 1, "down", "/")
    assert hops.should_forward({"other": 1}, 1, "down", "/")
    assert hops.should_forward({"x-received-from": "not a list"}, 1, "down", "/")
    one = {"x-received-from": [entry("a")]}
    assert not hops.should_forward(one, 1, "down", "/")         # one hop made, one allowed
    assert hops.should_forward(one, 2, "down", "/")
    assert not hops.should_forward(one, 2, "a", "/")            # it was at a's vhost /
    assert hops.should_forward(one, 2, "a", "other")            # not at a's vhost other


def test_each_move_puts_its_entry_first():
    headers = hops.received_from({"k": "v"}, entry("a"))
    headers = hops.received_from(headers, entry("b"))
    assert headers == {"k": "v", "x-received-from": [entry("b"), entry("a")]}
    assert hops.exchange_entry("amqp://h", "x", True, None, "v") == \
        {"uri": "amqp://h", "exchange": "x", "redelivered": True, "vhost": "v"}


def test_a_binding_travels_with_one_hop_less_each_time_and_not_back():
    first = hops.bound_upstream({"x-match": "all"}, 2, "up", "/", "down", "/", "/:x B")
    assert first == {"x-match": "all", "x-bound-from": [
        {"cluster-name": "down", "vhost": "/", "exchange": "/:x B", "hops": 2}]}
    # "up" repeats what "down" bound there to its own upstream "top": one hop left
    second = hops.bound_upstream(first, 3, "top", "/", "up", "/", "/:x A")
    assert second["x-bound-from"][0]["hops"] == 1
    assert second["x-bound-from"][1:] == first["x-bound-from"]
    assert hops.bound_upstream(second, 3, "top2", "/", "top", "/", "/:x A") is None
    # never back to where it came from
    assert hops.bound_upstream(first, 5, "down", "/", "up", "/", "/:x A") is None


def test_a_queue_link_counts_visits_and_keeps_the_original_route():
    e = {"uri": "amqp://h", "queue": "q", "redelivered": False}
    once = hops.queue_headers({"CC": ["a"]}, e, "ex", "key")
    assert once == {"x-original-exchange": "ex", "x-original-routing-key": "key",
                    "x-original-cc": ["a"], "x-received-from": [{**e, "visit-count": 1}]}
    elsewhere = {"uri": "amqp://other", "queue": "q", "redelivered": False}
    twice = hops.queue_headers(hops.queue_headers(once, elsewhere, "", "q"), e, "", "q")
    assert twice["x-received-from"] == [{**e, "visit-count": 2},
                                        {**elsewhere, "visit-count": 1}]
    assert twice["x-original-exchange"] == "ex"


def test_the_upstreams_a_policy_gives():
    ups = {"b": {"uri": "amqp://b/v"}, "a": {"uri": ["amqp://a1", "amqp://a2"],
                                             "max-hops": 3, "exchange": "elsewhere"}}
    sets = {"pair": [{"upstream": "a", "max-hops": 5}, {"upstream": "missing"}]}

    def names(definition):
        return [u.name for u in upstreams.for_policy(definition, ups, sets, "x", "own")]
    assert names({"federation-upstream-set": "all"}) == ["a", "b"]
    assert names({"federation-upstream": "b"}) == ["b"]
    assert names({"federation-upstream-pattern": "^b"}) == ["b"]
    assert names({"federation-upstream-set": "pair"}) == ["a"]   # a missing one is skipped
    assert names({"federation-upstream-set": "nothing"}) == []
    assert names({"message-ttl": 5}) == []
    [a] = upstreams.for_policy({"federation-upstream-set": "pair"}, ups, sets, "x", "own")
    assert (a.max_hops, a.exchange, a.queue, a.consumer_tag, a.prefetch_count, a.ack_mode) == \
        (5, "elsewhere", "x", "federation-link-a", 1000, "on-confirm")
    assert [u.vhost for u in a.uris] == ["own", "own"]          # no vhost: the downstream's
    [b] = upstreams.for_policy({"federation-upstream": "b"}, ups, sets, "x", "own")
    assert [u.vhost for u in b.uris] == ["v"]
