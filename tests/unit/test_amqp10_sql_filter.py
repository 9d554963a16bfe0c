"""RabbitMQ 4.2's SQL filter expressions (amqpbroker/amqp10/sql_filter.py): what its docs
list as supported evaluates as SQL's three-valued logic says, what they list as refused is
refused at the attach, and LIKE is SQL's LIKE (held against a regular expression) at a cost
bounded by the lengths whatever the pattern."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpbroker.amqp10.sql_filter import (MAX_TOKENS, Message, SqlError, SqlFilter, evaluate,
                                          like, parse)

MSG = Message(None, {"subject": "order.created", "reply_to": "/queues/r", "to": "orders",
                     "user_id": b"Bob", "creation_time": 1_753_365_622_460,
                     "group_sequence": 6, "message_id": 12345},
              {"color": "blue", "price": 99.99, "qty": 3, "premium": True, "cancelled": False,
               "order-status": "pending", "注文": "x", "and": 1, "big": 2 ** 60})


def ev(text: str, m: Message = MSG):
    return evaluate(parse(text), m)


@pytest.mark.parametrize("text", [
    "p.subject = 'order.created'", "properties.subject LIKE 'order%'",
    "p.reply_to = '/queues/r' AND p.to = 'orders'", "p.user_id = 0x426F62",
    "properties.message_id = 12345", "p.creation_time < 1753365622461",
    "p.group_sequence % 3 = 0", "p.group_sequence / 4 = 1", "h.priority = 4",
    "header.priority > 3", "color = 'blue'", "a.color = 'blue'",
    "application_properties.color = \"blue\"", "[order-status] = 'pending'", "[注文] = 'x'",
    "price >= 99.99 AND qty * price > 299", "qty + 5 > 7", "price - 0.99 = 99",
    "qty = 3.0", "value IS NULL", "color IS NOT NULL", "NOT cancelled", "premium = TRUE",
    "color IN ('red', 'blue')", "color NOT IN ('red', 'green')", "color NOT LIKE 'r%'",
    "(color = 'red' OR color = 'blue') AND qty < 10", "balance IS NULL OR balance < -100",
    "qty < +100", "1.23E6 > 1E5", "p.absolute_expiry_time IS NULL OR p.absolute_expiry_time > UTC()",
    "p.creation_time < UTC()", "[and] = 1", "big + 1 > big", "'It''s' = 'It''s'",
    "p.subject LIKE 'order\\.%' ESCAPE '\\'", "p.subject LIKE '_____._______'",
    "p.subject <> 'other' AND color != 'red'", "'b' > 'a'",
])
def test_what_rabbitmq_documents_is_true_for_a_matching_message(text):
    assert ev(text) is True


@pytest.mark.parametrize("text, result", [
    ("missing = 1", None), ("missing <> 1", None), ("NOT missing", None),
    ("missing = 1 OR color = 'blue'", True), ("missing = 1 AND color = 'blue'", None),
    ("missing = 1 AND color = 'red'", False), ("NOT (missing = 1)", None),
    ("qty = 'three'", None), ("color > 1", None), ("premium > FALSE", None),
    ("p.user_id > 0x00", None), ("qty / 0 = 1", None), ("qty % 1.2 = 0", None),
    ("color LIKE 'b%' AND qty IN (1, 2)", False), ("missing IN ('a')", None),
    ("missing LIKE 'a%'", None), ("qty LIKE '3'", None), ("qty = 4", False),
    ("NOT premium", False), ("NOT color", None), ("qty + 1", 4), ("- qty = -3", True),
    ("-7 / 2 = -3", True), ("-7 % 2 = -1", True), ("7 / 2.0 = 3.5", True),
    ("premium = 1", None), ("premium <> FALSE", True),
])
def test_three_valued_logic(text, result):
    assert ev(text) == result


@pytest.mark.parametrize("text", [
    "", "   ", "color =", "= 'blue'", "color = 'blue", "(color = 'blue'", "color = 'a' b",
    "m.x = 1", "message_annotations.x = 1", "d.x = 1", "f.x = 1", "footer.x = 1",
    "h.durable = TRUE", "p.nope = 1", "z.x = 1", "color LIKE 1", "color LIKE 'a' ESCAPE 'ab'",
    "color IN ()", "color IN (other)", "color NOT = 1", "UTC = 1", "0x123 = 1",
    "color = 'a' and qty = 1", "EXISTS(color)", "UPPER(color) = 'A'",
    "color = 'a' # 1", "a = 1 = 1", " OR ".join(["a = 1"] * 60), "x" * 4097,
])
def test_what_rabbitmq_refuses_is_refused(text):
    with pytest.raises(SqlError):
        parse(text)


def test_nesting_within_the_token_limit_parses_or_is_refused_never_crashes():
    for depth in (10, 60, MAX_TOKENS // 2 - 2):
        text = "(" * depth + "a = 1" + ")" * depth
        try:
            assert evaluate(parse(text), Message(None, {}, {"a": 1})) is True
        except SqlError as exc:
            assert "nested" in str(exc)
    text = "NOT " * (MAX_TOKENS - 3) + "a"
    try:
        parse(text)
    except SqlError as exc:
        assert "nested" in str(exc)


def test_the_token_limit():
    parse(" OR ".join(["a"] * ((MAX_TOKENS + 1) // 2)))
    with pytest.raises(SqlError, match="tokens"):
        parse(" OR ".join(["a"] * ((MAX_TOKENS + 1) // 2 + 1)))


def test_a_filter_reads_the_header_priority_properties_and_application_properties():
    f = SqlFilter("h.priority > 4 AND p.subject = 's' AND p.message_id = 0x0102 AND k = 1")
    props = [("binary", b"\x01\x02"), ("null", None), ("null", None), ("utf8", "s")]
    assert f.accepts([("boolean", True), ("ubyte", 5)], props, {"k": 1})
    assert not f.accepts([("boolean", True), ("ubyte", 4)], props, {"k": 1})
    assert not f.accepts([], props, {"k": 1})               # no header: priority 4
    assert SqlFilter("h.priority = 4").accepts([], [], {})


def like_reference(value: str, pattern: str, escape: str | None) -> bool:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if escape is not None and c == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


@given(value=st.text(alphabet="ab%_\\\n", max_size=12),
       pattern=st.text(alphabet="ab%_\\", max_size=10),
       escape=st.sampled_from([None, "\\"]))
@settings(max_examples=2000, deadline=None)
def test_like_is_sqls_like(value, pattern, escape):
    assert like(value, pattern, escape) == like_reference(value, pattern, escape)


def test_like_takes_the_patterns_that_make_regular_expressions_backtrack():
    """CVE-2026-67240's pattern (``%_%_..._%X``, overlapping wildcards) against a value that
    does not match: at most the lengths' product of steps here (a backtracking regular
    expression takes time exponential in the wildcards: this would not finish)."""
    assert not like("a" * 1000, "%_" * 300 + "%X")
    assert like("a" * 1000 + "X", "%_" * 300 + "%X")
