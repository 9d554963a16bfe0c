"""Choosing a queue's policy and resolving it with the queue's arguments (policies.py), and
the checks of a policy body, without a broker."""
from __future__ import annotations

import pytest

from amqpbroker.policies import PolicyInvalid, choose, effective_arguments, make_policy


def pol(name, definition, pattern=".", priority=0, apply_to="all"):
    return make_policy("/", name, {"pattern": pattern, "definition": definition,
                                   "priority": priority, "apply-to": apply_to})


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
    assert effective_arguments(pol("p", definition), arguments, qtype) == expected


def test_no_policy_leaves_the_arguments():
    args = {"x-max-length": 1}
    assert effective_arguments(None, args, "classic") is args


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
