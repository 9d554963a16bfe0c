"""Choosing a queue's policy and resolving it with the queue's arguments (policies.py), and
the checks of a policy body, without a broker."""
from __future__ import annotations

import pytest

from amqpbroker.frontend.ack_timeouts import timeout_of
from amqpbroker.policies import (PolicyInvalid, choose, effective_arguments, make_policy,
                                 merged)


def pol(name, definition, pattern=".", priority=0, apply_to="all", operator=False):
    return make_policy("/", name, {"pattern": pattern, "definition": definition,
                                   "priority": priority, "apply-to": apply_to}, operator)


def test_choose_by_pattern_apply_to_priority_then_name():
    ps = [pol("z", {"max-length": 1}, "^orders"), pol("a", {"max-length": 2}, "orders"),
          pol("high", {"max-length": 3}, "^o", priority=2, apply_to="quorum_queues"),
          pol("streams", {"max-age": "1h"}, "^o", priority=9, apply_to="streams"),
          pol("x", {"max-length": 4}, "^o", priority=99, apply_to="exchanges")]
    assert choose(ps, "orders", "classic").name == "a"       # unanchored; first of equals
    assert choose(ps, "orders", "quorum").name == "high"
    assert choose(ps, "orders", "stream").name == "streams"
    assert choose(ps, "billing", "classic") is None
    assert choose(ps, "orders", "exchange").name == "x"      # apply-to exchanges
    assert choose(ps[:2], "orders", "exchange").name == "a"  # apply-to all


@pytest.mark.parametrize("qtype, arguments, definition, expected", [
    ("classic", {"x-max-length": 5}, {"max-length": 2}, {"x-max-length": 2}),
    ("classic", {"x-max-length": 1}, {"max-length": 2}, {"x-max-length": 1}),
    ("classic", {"x-overflow": "reject-publish"}, {"overflow": "drop-head"},
     {"x-overflow": "reject-publish"}),
    ("classic", {"x-expires": 300}, {"expires": 9000}, {"x-expires": 300}),
    ("classic", {}, {"delivery-limit": 3, "queue-mode": "lazy"}, {}),
    ("quorum", {"x-overflow": "reject-publish"}, {"overflow": "drop-head"},
     {"x-overflow": "drop-head"}),
    ("quorum", {"x-expires": 300}, {"expires": 9000}, {"x-expires": 9000}),
    ("quorum", {"x-delivery-limit": 5}, {"delivery-limit": 1}, {"x-delivery-limit": 1}),
    ("quorum", {}, {"overflow": "reject-publish-dlx"}, {}),
    ("stream", {"x-max-age": "2h"}, {"max-age": "1D", "max-length": 3}, {"x-max-age": "2h"}),
    ("stream", {"x-max-age": "2D"}, {"max-age": "1D"}, {"x-max-age": "1D"}),
    ("classic", {}, {"dead-letter-routing-key": "k"}, {}),
    ("classic", {"x-dead-letter-exchange": "dlx"}, {"dead-letter-routing-key": "k"},
     {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "k"}),
])
def test_effective_arguments(qtype, arguments, definition, expected):
    assert effective_arguments(pol("p", definition).definition, arguments, qtype) == expected


def test_no_policy_leaves_the_arguments():
    args = {"x-max-length": 1}
    assert effective_arguments({}, args, "classic") is args


def test_a_policy_with_a_key_the_queue_type_lacks_is_skipped_whole():
    """RabbitMQ 3.10.8, measured: a classic queue does not take a policy that sets a
    delivery-limit, a stream one that sets a max-length; the next policy that applies is
    chosen instead."""
    ps = [pol("qq-ish", {"max-length": 5, "delivery-limit": 2}, priority=10),
          pol("plain", {"max-length": 7}),
          pol("stream-ish", {"max-age": "1D"}, priority=5)]
    assert choose(ps, "q", "classic").name == "plain"
    assert choose(ps, "q", "quorum").name == "qq-ish"
    assert choose(ps, "q", "stream").name == "stream-ish"
    assert choose(ps[:2], "q", "stream") is None
    lenient = pol("any", {"max-length-bytes": 10, "queue-version": 2, "alternate-exchange": "ae"})
    assert all(choose([lenient], "q", t) for t in ("classic", "quorum", "stream"))
    assert choose([pol("ha", {"ha-mode": "all"})], "q", "quorum") is None
    assert choose([pol("ha", {"ha-mode": "all"})], "q", "classic").name == "ha"


def test_an_operator_policy_caps_the_policy_it_is_merged_with():
    user = pol("u", {"max-length": 10, "message-ttl": 30000, "expires": 3600000})
    op = pol("o", {"max-length": 5, "message-ttl": 60000}, operator=True)
    assert merged(user, op) == {"max-length": 5, "message-ttl": 30000, "expires": 3600000}
    assert merged(None, op) == {"max-length": 5, "message-ttl": 60000}
    assert merged(user, None) == user.definition
    assert merged(None, None) == {}
    # then resolved with the queue's own arguments, the lower value
    assert effective_arguments(merged(user, op), {"x-max-length": 3}, "classic") == {
        "x-max-length": 3, "x-message-ttl": 30000, "x-expires": 3600000}


@pytest.mark.parametrize("body, reason", [        # RabbitMQ 3.10.8's words, measured
    ({"pattern": ".", "definition": {"overflow": "drop-head"}},
     '[{<<"overflow">>,<<"drop-head">>}] are not recognised policy settings'),
    ({"pattern": ".", "definition": {"dead-letter-exchange": "x"}},
     '[{<<"dead-letter-exchange">>,<<"x">>}] are not recognised policy settings'),
    ({"pattern": ".", "definition": {"max-length": 1}, "apply-to": "classic_queues"},
     "apply-to 'classic_queues' unrecognised; should be 'queues', 'exchanges' or 'all'"),
    ({"pattern": ".", "definition": {"message-ttl": -1}}, "-1 is not a valid message TTL"),
    ({"pattern": ".", "definition": {}}, "no policy provided"),
])
def test_operator_policy_refused(body, reason):
    with pytest.raises(PolicyInvalid) as err:
        make_policy("/", "p", body, operator=True)
    assert str(err.value) == reason


def test_operator_policy_takes_the_numeric_limits():
    p = make_policy("/", "p", {"pattern": ".", "definition": {
        "expires": 1, "message-ttl": 0, "max-length": 0, "max-length-bytes": 0,
        "delivery-limit": 0, "max-in-memory-length": 0, "max-in-memory-bytes": 0}}, True)
    assert p.operator and len(p.definition) == 7


@pytest.mark.parametrize("body, reason", [
    ({"pattern": "(", "definition": {"max-length": 1}},
     "pattern should be regular expression but is invalid"),
    ({"pattern": ".", "definition": {"max-length": True}}, "true is not a valid maximum length"),
    ({"pattern": ".", "definition": {"ha-mode": "some"}}, '<<"some">> is not a valid ha-mode'),
    ({"pattern": ".", "definition": {"alternate-exchange": 5}},
     "5 is not a valid alternate exchange name"),
    ({"pattern": ".", "definition": {"max-length": 1}, "priority": 1.5},
     "priority should be a number, actually was 1.5"),
    ({"pattern": ".", "definition": "x"}, 'definition should be an object'),
])
def test_refused(body, reason):
    with pytest.raises(PolicyInvalid) as err:
        make_policy("/", "p", body)
    assert str(err.value).startswith(reason)


def test_priority_as_a_string_of_digits_is_a_number():
    assert make_policy("/", "p", {"pattern": ".", "definition": {"max-length": 1},
                                  "priority": "7"}).priority == 7


@pytest.mark.parametrize("kind", ["classic", "quorum", "stream"])
def test_consumer_timeout_is_the_lower_of_argument_and_policy(kind):
    """RabbitMQ 3.12's args_policy_lookup with min, for every queue type."""
    policy = make_policy("/", "p", {"pattern": ".", "definition": {"consumer-timeout": 400}})
    assert policy.applies_to("q", kind)
    for args, used in (({}, 400), ({"x-consumer-timeout": 200}, 200),
                       ({"x-consumer-timeout": 600000}, 400)):
        assert effective_arguments(merged(policy, None), args, kind)["x-consumer-timeout"] \
            == used


class QueueWithArguments:
    def __init__(self, effective):
        self.effective = effective


@pytest.mark.parametrize("effective, default, expected", [
    ({}, 1800000, 1800000), ({}, 0, None), ({"x-consumer-timeout": 5}, 0, 5),
    ({"x-consumer-timeout": 0}, 1000, 0), ({"x-consumer-timeout": "5"}, 1000, 1000),
    ({"x-consumer-timeout": True}, 1000, 1000), ({"x-consumer-timeout": -1}, 1000, 1000)])
def test_timeout_of(effective, default, expected):
    """The broker's 0 is never; a queue's 0 is at once (RabbitMQ's); what is not a
    non-negative integer leaves the broker's."""
    assert timeout_of(QueueWithArguments(effective), default) == expected
