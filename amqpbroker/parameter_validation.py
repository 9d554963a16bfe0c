"""Runtime parameter values checked as RabbitMQ's ``rabbit_parameter_validation`` checks
them, with its texts: a value's type (``binary``, ``number``, ``boolean``, ``enum``) and a
whole object of keys (``proplist``). The shovels' definitions (``shovel/definition.py``) and
the federation's upstreams (``federation/upstreams.py``) are checked with these.
"""
from __future__ import annotations

from .erlang import erlang_term


class Invalid(ValueError):
    """A value RabbitMQ refuses: ``reasons``, each a line after "Validation failed"."""

    def __init__(self, reasons: list[str]):
        super().__init__("\n".join(reasons))
        self.reasons = reasons


def binary(key, v):
    return None if isinstance(v, str) else f"{key} should be binary, actually was " \
                                            f"{erlang_term(v)}"


def number(key, v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return None
    return f"{key} should be a number, actually was {erlang_term(v)}"


def boolean(key, v):
    return None if isinstance(v, bool) else f"{key} should be boolean, actually was " \
                                             f"{erlang_term(v)}"


def enum(options):
    def check(key, v):
        if not isinstance(v, str):
            return f"{key} should be binary, actually was {erlang_term(v)}"
        if v not in options:
            return f"{key} should be one of {erlang_term(list(options))}, actually was " \
                   f"{erlang_term(v)}"
        return None
    return check


def pairs(d: dict) -> str:
    """An object as Erlang prints a proplist: ``[{<<"k">>,v},...]``."""
    return "[" + ",".join(f"{{{erlang_term(k)},{erlang_term(x)}}}" for k, x in d.items()) + "]"


def proplist(name: str, value, rules: list, mandatory=()) -> list[str]:
    """The reasons ``value`` (an object) fails ``rules`` ((key, check) in RabbitMQ's order;
    the ``mandatory`` keys must be there), as RabbitMQ's ``proplist`` gives them: unknown
    keys first, then the failed checks, later keys first."""
    if not isinstance(value, dict):
        return [f"{name} not a list {erlang_term(value)}"]
    known = {k for k, _ in rules}
    unknown = {k: v for k, v in value.items() if k not in known}
    reasons = [f"Unrecognised terms {pairs(unknown)} in {name}"] if unknown else []
    found = []
    for key, rule in rules:
        if key in value:
            reason = rule(key, value[key])
            if reason:
                found.append(reason)
        elif key in mandatory:
            found.append(f'Key "{key}" not found in {name}')
    return reasons + list(reversed(found))
