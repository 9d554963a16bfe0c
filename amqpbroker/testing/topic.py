"""A reference for AMQP topic matching, as plain as possible: a regular expression.

``interop/test_topic_routing.py`` checks it against a broker (RabbitMQ included, through
``AMQP_URL``); the property tests compare the broker's matcher with it. It backtracks, so only
small inputs.

Each word of the routing key is written with a '.' before it (``"a..b"`` -> ``".a..b"``, ``""``
-> ``""``: no words), so a word is exactly ``\\.[^.]*`` and the binding key's words translate
one by one: a word to itself, ``*`` to one word, ``#`` to any number of words.
"""
from __future__ import annotations

import re


def topic_matches(binding_key: str, routing_key: str) -> bool:
    words = binding_key.split(".") if binding_key else []
    parts = [r"(?:\.[^.]*)*" if w == "#" else r"\.[^.]*" if w == "*" else re.escape("." + w)
             for w in words]
    subject = "".join("." + w for w in routing_key.split(".")) if routing_key else ""
    return re.fullmatch("".join(parts), subject) is not None
