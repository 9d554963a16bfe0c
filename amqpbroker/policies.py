"""Policies: RabbitMQ's way to set queue properties for many queues at once, by name pattern,
changeable while the queues run (``rabbitmqctl set_policy``, ``PUT /api/policies/...``).

Theory of operation
-------------------
A policy belongs to a vhost: a regular expression ``pattern`` searched in queue names
(unanchored, as RabbitMQ's ``re:run``), an ``apply-to`` (``queues``, ``exchanges``, ``all``,
or one queue type: ``classic_queues``, ``quorum_queues``, ``streams``), a ``priority`` and a
``definition`` of keys (``message-ttl``, ``max-length``, ``dead-letter-exchange``, ...). A queue
gets at most one policy: of those whose pattern and apply-to match it, the highest priority;
between equal priorities the first name in order (RabbitMQ leaves that choice undefined --
its documentation says so, and against 3.10.8 it varies with the names -- so ours is the one
stable rule). Policies do not merge.
A policy applies to a queue only if its type has every key of the definition
(``NOT_FOR``): RabbitMQ 3.10 skips a policy with a ``delivery-limit`` for classic queues, or a
``max-length`` for streams, whole, and the next one that applies is chosen (measured against
it, key by key and type by type).

Operator policies (``/api/operator-policies``, administrators only) are chosen the same way,
separately, from their own set, and take only numeric limits (``OPERATOR_KEYS``); a queue's
operator policy is merged into its policy before the queue's arguments are resolved: a key
both set takes the lower value, a key only the operator policy sets is added (``merged``).
So an operator caps what users' policies and queues ask for, and cannot raise it.

A queue's effective settings are its own ``x-`` arguments combined with its policy's keys
(``effective_arguments``), as RabbitMQ 3.10 resolves them per queue type (``RESOLVE``): where
both say something, for lengths, TTLs and a classic queue's ``expires`` the lower value wins,
for dead-lettering and a classic queue's ``overflow`` the argument, for a quorum queue's
``overflow`` and ``expires`` the policy; a key the queue does not set comes from the policy.
Keys a queue type does not have are left out for that type (a ``delivery-limit`` changes
nothing of a classic queue), as RabbitMQ ignores them. The result is a plain ``x-`` argument
table: the worker's queue reads it as it reads declared arguments (``queue_args.QueueArgs``),
and takes a new one while it runs (``Queue.apply_arguments``) when a policy is set, changed
or deleted.

Recognised but without effect here, so definitions exported by RabbitMQ 3.x import whole:
classic queue mirroring (``ha-*``, ``queue-master-locator``: classic queues are not
replicated, as in RabbitMQ 4; quorum queues are), ``queue-mode``, ``queue-version`` and the
in-memory limits (this broker's classic queues page by segments), ``queue-leader-locator``
(the controller places replicas by load). Setting one logs a warning that says so.
Exchanges take policies too (``apply-to`` ``exchanges`` or ``all``): ``alternate-exchange``
is the one key that acts on them, the exchange's own argument winning over it
(``Exchange.set_policy_alternate``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import pcre
from .erlang import erlang_term as _term     # RabbitMQ's ~p of a JSON value
from .federation.upstreams import policy_problem as federation_problem
from .queue_args import OVERFLOW_MODES, parse_max_age

APPLY_TO = ("queues", "exchanges", "all", "classic_queues", "quorum_queues", "streams")
OPERATOR_APPLY_TO = ("queues", "exchanges", "all")
# what an operator policy may set (RabbitMQ 3.10's rabbit_policies: operator_policy_validator)
OPERATOR_KEYS = ("expires", "message-ttl", "max-length", "max-length-bytes", "delivery-limit",
                 "max-in-memory-length", "max-in-memory-bytes")


class PolicyInvalid(ValueError):
    """A policy RabbitMQ refuses; ``str()`` is its reason (after "Validation failed")."""




def _int_at_least(low: int, what: str):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            return f"{_term(v)} is not a valid {what}"
        return None
    return check


def _one_of(choices: tuple, what: str):
    def check(v):
        return None if v in choices else f"{_term(v)} is not a valid {what}"
    return check


def _binary(what: str):
    def check(v):
        return None if isinstance(v, str) else f"{_term(v)} is not a valid {what}"
    return check


def _max_age(v):
    return None if parse_max_age(v) is not None else f"{_term(v)} is not a valid max age"


def _anything(v):
    return None


# key -> (its check with RabbitMQ 3.10's text (rabbit_policies:validate_policy0), the
# x-argument it stands for, or None: no effect here)
KEYS = {
    "message-ttl": (_int_at_least(0, "message TTL"), "x-message-ttl"),
    "expires": (_int_at_least(1, "queue expiry"), "x-expires"),
    "max-length": (_int_at_least(0, "maximum length"), "x-max-length"),
    "max-length-bytes": (_int_at_least(0, "maximum length in bytes"), "x-max-length-bytes"),
    "overflow": (_one_of(OVERFLOW_MODES, "overflow value"), "x-overflow"),
    "dead-letter-exchange": (_binary("dead letter exchange name"), "x-dead-letter-exchange"),
    "dead-letter-routing-key": (_binary("dead letter routing key"),
                                "x-dead-letter-routing-key"),
    "delivery-limit": (_int_at_least(0, "delivery limit"), "x-delivery-limit"),
    "dead-letter-strategy": (_one_of(("at-most-once", "at-least-once"),
                                     "dead letter strategy"), "x-dead-letter-strategy"),
    "max-age": (_max_age, "x-max-age"),
    "alternate-exchange": (_binary("alternate exchange name"), None),   # exchanges
    # read by the federation (amqpbroker/federation), for exchanges and queues
    "federation-upstream": (_binary("federation upstream name"), None),
    "federation-upstream-set": (_binary("federation upstream set name"), None),
    "federation-upstream-pattern": (_binary("federation upstream pattern name"), None),
    # RabbitMQ 3.12's; read by the channels (frontend/ack_timeouts.py)
    "consumer-timeout": (_int_at_least(0, "consumer timeout"), "x-consumer-timeout"),
    # recognised, without effect here (module doc)
    "stream-max-segment-size-bytes": (_int_at_least(0, "segment size"), None),
    "queue-mode": (_one_of(("default", "lazy"), "queue-mode value"), None),
    "queue-version": (_one_of((1, 2), "queue-version value"), None),
    "max-in-memory-length": (_int_at_least(0, "maximum memory length"), None),
    "max-in-memory-bytes": (_int_at_least(0, "maximum memory in bytes"), None),
    "queue-leader-locator": (_one_of(("client-local", "balanced", "random", "least-leaders"),
                                     "queue leader locator value"), None),
    "queue-master-locator": (_one_of(("min-masters", "client-local", "random"),
                                     "queue master locator"), None),
    "ha-mode": (_one_of(("all", "exactly", "nodes"), "ha-mode value"), None),
    "ha-params": (_anything, None),
    "ha-sync-mode": (_one_of(("manual", "automatic"), "ha-sync-mode value"), None),
    "ha-sync-batch-size": (_int_at_least(1, "ha-sync-batch-size value"), None),
    "ha-promote-on-shutdown": (_one_of(("when-synced", "always"),
                                       "ha-promote-on-shutdown value"), None),
    "ha-promote-on-failure": (_one_of(("when-synced", "always"),
                                      "ha-promote-on-failure value"), None),
}

# keys without an x-argument that still act: on exchanges, or through the federation
ACTING_ELSEWHERE = ("alternate-exchange", "federation-upstream", "federation-upstream-set",
                    "federation-upstream-pattern")

# Per queue type, the keys that act on it and which side wins when the queue's own argument
# says otherwise: "min" the lower value, "arg" the argument, "policy" the policy. RabbitMQ
# 3.10's rabbit_amqqueue_process:process_args_policy (classic), rabbit_quorum_queue:
# ra_machine_config and rabbit_stream_queue (checked against it where they differ: a quorum
# queue's overflow and expires are the policy's, its delivery-limit the lower).
RESOLVE = {
    "classic": {"message-ttl": "min", "expires": "min", "max-length": "min",
                "max-length-bytes": "min", "overflow": "arg", "dead-letter-exchange": "arg",
                "dead-letter-routing-key": "arg", "consumer-timeout": "min"},
    "quorum": {"message-ttl": "min", "expires": "policy", "max-length": "min",
               "max-length-bytes": "min", "overflow": "policy", "delivery-limit": "min",
               "dead-letter-exchange": "arg", "dead-letter-routing-key": "arg",
               "dead-letter-strategy": "arg", "consumer-timeout": "min"},
    "stream": {"max-length-bytes": "min", "max-age": "min", "consumer-timeout": "min"},
}
# Per queue type, the keys that keep a policy off its queues altogether (RabbitMQ 3.10's
# is_policy_applicable, measured one key per policy against 3.10.8)
_HA = ("ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown",
       "ha-promote-on-failure")
NOT_FOR = {
    "classic": frozenset(("delivery-limit", "dead-letter-strategy", "max-age",
                          "stream-max-segment-size-bytes", "queue-leader-locator")),
    "quorum": frozenset(("max-age", "stream-max-segment-size-bytes", "queue-mode",
                         "queue-master-locator", *_HA)),
    "stream": frozenset(("message-ttl", "expires", "max-length", "overflow",
                         "dead-letter-exchange", "dead-letter-routing-key", "delivery-limit",
                         "dead-letter-strategy", "queue-mode", "max-in-memory-length",
                         "max-in-memory-bytes", "queue-master-locator", *_HA)),
}
# quorum queues take these overflow modes only (queue_args.check_quorum_args)
QUORUM_OVERFLOW = ("drop-head", "reject-publish")


@dataclass(frozen=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    definition: dict
    priority: int = 0
    apply_to: str = "all"
    regex: re.Pattern = field(compare=False, repr=False, default=None)
    operator: bool = False          # an operator policy (module doc)

    def item(self) -> dict:
        """As the management API and the definitions show it."""
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern,
                "apply-to": self.apply_to, "definition": dict(self.definition),
                "priority": self.priority}

    def applies_to(self, name: str, kind: str) -> bool:
        """``kind``: a queue's type (classic, quorum, stream) or "exchange"."""
        fits = {"all": True, "exchanges": kind == "exchange", "queues": kind != "exchange",
                "classic_queues": kind == "classic", "quorum_queues": kind == "quorum",
                "streams": kind == "stream"}[self.apply_to]
        refused = NOT_FOR.get(kind, ())
        return fits and not any(k in refused for k in self.definition) \
            and self.regex.search(name) is not None

    def without_effect(self) -> list[str]:
        """The keys of its definition that change nothing here (module doc)."""
        return [k for k in self.definition
                if KEYS[k][1] is None and k not in ACTING_ELSEWHERE]


def make_policy(vhost: str, name: str, body: dict, operator: bool = False) -> Policy:
    """A policy from a ``PUT /api/policies/{vhost}/{name}`` body or a definitions entry
    (``operator``: ``/api/operator-policies``), checked as RabbitMQ checks it;
    ``PolicyInvalid`` with its reason otherwise."""
    pattern = body.get("pattern")
    if not isinstance(pattern, str):
        raise PolicyInvalid(f"pattern should be a binary but was {_term(pattern)}")
    try:
        regex = pcre.compile(pattern)      # PCRE, as RabbitMQ reads it (pcre.py)
    except re.error as exc:
        raise PolicyInvalid(
            f"pattern should be regular expression but is invalid: {exc.msg}") from None
    apply_to = body.get("apply-to", "all")
    if operator and apply_to not in OPERATOR_APPLY_TO:
        shown = apply_to if isinstance(apply_to, str) else json.dumps(apply_to)
        raise PolicyInvalid(f"apply-to '{shown}' unrecognised; should be 'queues', "
                            f"'exchanges' or 'all'")
    if apply_to not in APPLY_TO:
        raise PolicyInvalid(f"apply-to {_term(apply_to)} unrecognised; should be one of "
                            f"{', '.join(APPLY_TO)}")
    priority = body.get("priority", 0)
    if isinstance(priority, str):          # rabbitmqadmin and the old UI send "1"
        priority = int(priority) if re.fullmatch(r"-?\d+", priority) else priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PolicyInvalid(f"priority should be a number, actually was {_term(priority)}")
    definition = body.get("definition")
    if not isinstance(definition, dict):
        raise PolicyInvalid(f"definition should be an object, actually was "
                            f"{_term(definition)}")
    if not definition:
        raise PolicyInvalid("no policy provided")
    unknown = [(k, v) for k, v in definition.items()
               if k not in (OPERATOR_KEYS if operator else KEYS)]
    if unknown:
        terms = ",".join(f"{{{_term(k)},{_term(v)}}}" for k, v in unknown)
        raise PolicyInvalid(f"[{terms}] are not recognised policy settings")
    for key, value in definition.items():
        reason = KEYS[key][0](value)
        if reason is not None:
            raise PolicyInvalid(reason)
    reason = federation_problem(definition)
    if reason is not None:
        raise PolicyInvalid(reason)
    return Policy(vhost, name, pattern, dict(definition), priority, apply_to, regex, operator)


def warn_without_effect(policy: Policy, log) -> None:
    """One warning line naming the keys of ``policy`` that change nothing here."""
    idle = policy.without_effect()
    if idle:
        log.warning("policy '%s' in vhost '%s': %s change(s) nothing on this broker (classic "
                    "queues are not mirrored, and page by segments; replicas are placed by "
                    "load): see README, Policies", policy.name, policy.vhost, ", ".join(idle))


def choose(policies, name: str, kind: str) -> Policy | None:
    """The policy of a queue (``kind`` its type) or an exchange (``kind`` "exchange"): the
    highest priority that applies, the first name of equals."""
    best = None
    for p in policies:
        if p.applies_to(name, kind) and (
                best is None or p.priority > best.priority
                or (p.priority == best.priority and p.name < best.name)):
            best = p
    return best


def merged(policy: Policy | None, operator: Policy | None) -> dict:
    """A queue's effective policy definition: its policy's, with its operator policy's keys
    merged in, the lower value where both set one (RabbitMQ's ``effective_policy_definition``;
    every operator key is a number)."""
    out = dict(policy.definition) if policy is not None else {}
    if operator is not None:
        for key, value in operator.definition.items():
            out[key] = min(out[key], value) if isinstance(out.get(key), int) else value
    return out


def effective_arguments(definition: dict, arguments: dict, queue_type: str) -> dict:
    """The queue's ``x-`` arguments with its effective policy definition (``merged``)
    resolved in (``RESOLVE``)."""
    if not definition:
        return arguments
    out = dict(arguments)
    rules = RESOLVE.get(queue_type, {})
    for key, value in definition.items():
        rule, arg = rules.get(key), KEYS[key][1]
        if rule is None:
            continue
        if key == "overflow" and queue_type == "quorum" and value not in QUORUM_OVERFLOW:
            continue
        if arg not in out or rule == "policy":
            out[arg] = value
        elif rule == "min":
            out[arg] = _lower(key, out[arg], value)
    if "x-dead-letter-exchange" not in out:     # a routing key alone changes nothing
        out.pop("x-dead-letter-routing-key", None)
    return out


def _lower(key: str, argument, policy):
    """The lower of a queue's argument and its policy's value (a duration for max-age); the
    policy's when the argument is not comparable (the declare checked it)."""
    if key == "max-age":
        a, p = parse_max_age(argument), parse_max_age(policy)
        return argument if a is not None and a <= p else policy
    if isinstance(argument, int) and not isinstance(argument, bool):
        return min(argument, policy)
    return policy
