"""RabbitMQ 4.2's SQL filter expressions for a stream's AMQP 1.0 consumers (AMQP Filter
Expressions 1.0, section 6: ``amqp:sql-filter``, a SQL WHERE clause over a message's
header priority, properties and application properties), parsed once at the attach and
evaluated for every message the consumer would get. No I/O.

What RabbitMQ 4.2 takes (its docs, "Stream Filtering"), and so do we:

* reserved words in upper case: ``AND OR NOT IN IS NULL LIKE ESCAPE TRUE FALSE UTC``;
* fields: ``header.priority`` (``h.``; the header's default 4 when it has none),
  ``properties.NAME`` (``p.``: message_id, user_id, to, subject, reply_to,
  correlation_id, content_type, content_encoding, absolute_expiry_time, creation_time,
  group_id, group_sequence, reply_to_group_id), ``application_properties.KEY`` (``a.``,
  or the key alone); a key in brackets may hold any character (``[order-status]``, ``]]``
  for ``]``); other sections (delivery or message annotations, the footer) are refused;
* constants: integers, decimals and approximate numbers (``1.23E6``), ``TRUE``, ``FALSE``,
  strings in single or double quotes (a quote doubled inside), binary ``0x0123``;
* ``AND OR NOT`` and parentheses; ``= <> != < <= > >=``; ``+ - * / %`` on numbers, unary
  ``+ -``; ``IS [NOT] NULL``; ``[NOT] LIKE`` with ``%`` and ``_`` (and ``ESCAPE``);
  ``[NOT] IN (constants)``; ``UTC()``, now in milliseconds.

Three-valued logic, as SQL's: a field the message lacks is NULL, anything compared with NULL
is unknown, and so is what cannot be evaluated -- values of different kinds compared (a
number and a string), ordering strings, booleans or binaries (only ``=`` and ``<>`` apply
to them), a division by zero, ``%`` of a non-integer. The message is delivered only when the
whole expression is true.

An expression that does not parse, is longer than ``MAX_LENGTH`` characters or has more
than ``MAX_TOKENS`` tokens is refused at the attach (``SqlError``), as RabbitMQ refuses it.
``LIKE`` is matched by a loop that never backtracks more than once per ``%``, so a pattern
cannot make a match cost more than its length times the value's (RabbitMQ's regular
expressions could: CVE-2026-67240).
"""
from __future__ import annotations

import re
import time

MAX_LENGTH = 4096           # RabbitMQ's limits on an expression
MAX_TOKENS = 200
DEFAULT_PRIORITY = 4        # AMQP 1.0's header priority when the message has no header

PROPERTY_FIELDS = ("message_id", "user_id", "to", "subject", "reply_to", "correlation_id",
                   "content_type", "content_encoding", "absolute_expiry_time",
                   "creation_time", "group_id", "group_sequence", "reply_to_group_id")
_SECTIONS = {"header": "h", "h": "h", "properties": "p", "p": "p",
             "application_properties": "a", "a": "a"}
_REFUSED_SECTIONS = ("delivery_annotations", "d", "message_annotations", "m", "footer", "f")
_RESERVED = {"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ESCAPE", "TRUE", "FALSE", "UTC"}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<binary>0[xX][0-9a-fA-F]+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<bracket>\[(?:[^\]]|\]\])*\])
  | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)?)
  | (?P<op><>|!=|<=|>=|[=<>+\-*/%(),])
""", re.VERBOSE)


class SqlError(ValueError):
    """An expression RabbitMQ would refuse at the attach: why."""


# ------------------------------------------------------------------ tokens
def _tokens(text: str) -> list[tuple[str, object]]:
    if len(text) > MAX_LENGTH:
        raise SqlError(f"expression longer than {MAX_LENGTH} characters")
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SqlError(f"unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind, value = m.lastgroup, m.group()
        if kind == "space":
            continue
        if kind == "number":
            number = float(value) if any(c in value for c in ".eE") else int(value)
            out.append(("const", number))
        elif kind == "binary":
            digits = value[2:]
            if len(digits) % 2:
                raise SqlError(f"binary constant {value} has an odd number of digits")
            out.append(("const", bytes.fromhex(digits)))
        elif kind == "string":
            out.append(("const", value[1:-1].replace(value[0] * 2, value[0])))
        elif kind == "bracket":
            out.append(("field", ("a", value[1:-1].replace("]]", "]"))))
        elif kind == "word":
            if value in _RESERVED:      # in upper case only: ``and`` is a key's name
                out.append(("word", value))
            else:
                out.append(("field", _field(value)))
        else:
            out.append(("op", value))
        if len(out) > MAX_TOKENS:
            raise SqlError(f"expression of more than {MAX_TOKENS} tokens")
    return out


def _field(word: str) -> tuple[str, str]:
    if "." not in word:
        return ("a", word)
    section, name = word.split(".", 1)
    if section in _REFUSED_SECTIONS:
        raise SqlError(f"section {section} cannot be filtered on")
    if section not in _SECTIONS:
        raise SqlError(f"unknown section {section} in {word}")
    kind = _SECTIONS[section]
    if kind == "h" and name != "priority":
        raise SqlError(f"header field {name}: only priority can be filtered on")
    if kind == "p" and name not in PROPERTY_FIELDS:
        raise SqlError(f"unknown properties field {name}")
    return (kind, name)


# ------------------------------------------------------------------ parsing
class _Parser:
    """Recursive descent, lowest precedence first: OR, AND, NOT, a comparison or predicate,
    + and -, * / and %, unary + and -, then a constant, a field, UTC() or parentheses.
    The tree is tuples: ``("or", a, b)``, ``("cmp", op, a, b)``, ``("const", v)``, ..."""

    def __init__(self, tokens: list):
        self.tokens = tokens
        self.pos = 0

    def peek(self, kind: str | None = None, value=None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        k, v = self.tokens[self.pos]
        return (kind is None or k == kind) and (value is None or v == value)

    def take(self, kind: str, value=None):
        if not self.peek(kind, value):
            got = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "the end"
            raise SqlError(f"expected {value or kind}, got {got!r}")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def word(self, value: str) -> bool:
        if self.peek("word", value):
            self.pos += 1
            return True
        return False

    def op(self, *values) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op" \
                and self.tokens[self.pos][1] in values:
            self.pos += 1
            return self.tokens[self.pos - 1][1]
        return None

    def expression(self):
        node = self.conjunction()
        while self.word("OR"):
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self):
        node = self.negation()
        while self.word("AND"):
            node = ("and", node, self.negation())
        return node

    def negation(self):
        if self.word("NOT"):
            return ("not", self.negation())
        return self.predicate()

    def predicate(self):
        left = self.additive()
        op = self.op("=", "<>", "!=", "<", "<=", ">", ">=")
        if op is not None:
            return ("cmp", "<>" if op == "!=" else op, left, self.additive())
        if self.word("IS"):
            negated = self.word("NOT")
            self.take("word", "NULL")
            return ("isnull", left, negated)
        negated = self.word("NOT")
        if self.word("LIKE"):
            pattern = self.take("const")
            escape = None
            if self.word("ESCAPE"):
                escape = self.take("const")
                if not isinstance(escape, str) or len(escape) != 1:
                    raise SqlError("ESCAPE takes one character")
            if not isinstance(pattern, str):
                raise SqlError("LIKE takes a string")
            return ("like", left, pattern, escape, negated)
        if self.word("IN"):
            self.take("op", "(")
            values = [self.constant()]
            while self.op(","):
                values.append(self.constant())
            self.take("op", ")")
            return ("in", left, values, negated)
        if negated:
            raise SqlError("NOT must be followed by LIKE or IN here")
        return left

    def constant(self):
        sign = self.op("+", "-")
        value = self.take("const") if not self.peek("word") else self._literal_word()
        if sign is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SqlError(f"a sign before {value!r}")
            value = -value if sign == "-" else value
        return value

    def _literal_word(self):
        if self.word("TRUE"):
            return True
        if self.word("FALSE"):
            return False
        raise SqlError(f"expected a constant, got {self.tokens[self.pos][1]!r}")

    def additive(self):
        node = self.multiplicative()
        while (op := self.op("+", "-")) is not None:
            node = ("arith", op, node, self.multiplicative())
        return node

    def multiplicative(self):
        node = self.unary()
        while (op := self.op("*", "/", "%")) is not None:
            node = ("arith", op, node, self.unary())
        return node

    def unary(self):
        op = self.op("+", "-")
        if op is not None:
            return ("neg", self.unary()) if op == "-" else ("pos", self.unary())
        return self.primary()

    def primary(self):
        if self.op("("):
            node = self.expression()
            self.take("op", ")")
            return node
        if self.peek("const"):
            return ("const", self.take("const"))
        if self.peek("field"):
            return ("field", self.take("field"))
        if self.word("TRUE"):
            return ("const", True)
        if self.word("FALSE"):
            return ("const", False)
        if self.word("UTC"):
            self.take("op", "(")
            self.take("op", ")")
            return ("utc",)
        got = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "the end"
        raise SqlError(f"unexpected {got!r}")


def parse(text: str):
    """The expression's tree; raises ``SqlError``."""
    if not isinstance(text, str) or not text.strip():
        raise SqlError("an empty expression")
    parser = _Parser(_tokens(text))
    try:
        tree = parser.expression()
    except RecursionError:
        raise SqlError("expression nested too deeply") from None
    if parser.pos != len(parser.tokens):
        raise SqlError(f"unexpected {parser.tokens[parser.pos][1]!r}")
    return tree


# ------------------------------------------------------------------ evaluation
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Message:
    """What an expression reads of a message: its header priority, properties (by name,
    plain values) and application properties."""

    __slots__ = ("priority", "properties", "application")

    def __init__(self, priority, properties: dict, application: dict):
        self.priority = DEFAULT_PRIORITY if priority is None else priority
        self.properties = properties
        self.application = application


def evaluate(node, m: Message):
    """True, False or None (unknown)."""
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "field":
        section, name = node[1]
        if section == "a":
            value = m.application.get(name)
        elif section == "p":
            value = m.properties.get(name)
        else:
            value = m.priority
        return value if isinstance(value, (str, bytes, bool, int, float)) else None
    if kind == "and" or kind == "or":
        decides = kind == "or"          # the value that decides alone: OR's true, AND's false
        a = evaluate(node[1], m)
        if a is decides:
            return decides
        b = evaluate(node[2], m)
        if b is decides:
            return decides
        return (not decides) if a is (not decides) and b is (not decides) else None
    if kind == "not":
        a = evaluate(node[1], m)
        return None if not isinstance(a, bool) else not a
    if kind == "cmp":
        return _compare(node[1], evaluate(node[2], m), evaluate(node[3], m))
    if kind == "isnull":
        is_null = evaluate(node[1], m) is None
        return not is_null if node[2] else is_null
    if kind == "like":
        value = evaluate(node[1], m)
        if not isinstance(value, str):
            return None
        matched = like(value, node[2], node[3])
        return not matched if node[4] else matched
    if kind == "in":
        value = evaluate(node[1], m)
        if value is None:
            return None
        found = any(_compare("=", value, v) is True for v in node[2])
        return not found if node[3] else found
    if kind == "arith":
        return _arith(node[1], evaluate(node[2], m), evaluate(node[3], m))
    if kind == "neg":
        a = evaluate(node[1], m)
        return -a if _number(a) else None
    if kind == "pos":
        a = evaluate(node[1], m)
        return a if _number(a) else None
    if kind == "utc":
        return int(time.time() * 1000)
    raise AssertionError(kind)


def _compare(op: str, a, b):
    if a is None or b is None:
        return None
    if _number(a) and _number(b):
        pass
    elif type(a) is not type(b):
        return None                     # a number and a string, a boolean and a number...
    elif op not in ("=", "<>") and not isinstance(a, str):
        return None                     # booleans and binaries: equality only
    if op == "=":
        return a == b
    if op == "<>":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _arith(op: str, a, b):
    if not _number(a) or not _number(b):
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None                     # division by zero: unknown
    if op == "/":
        if isinstance(a, int) and isinstance(b, int):
            q = abs(a) // abs(b)        # an integer division truncates, as SQL's
            return q if (a >= 0) == (b >= 0) else -q
        return a / b
    if not isinstance(a, int) or not isinstance(b, int):
        return None                     # % of non-integers: unknown
    r = abs(a) % abs(b)
    return r if a >= 0 else -r


def like(value: str, pattern: str, escape: str | None = None) -> bool:
    """SQL's LIKE: ``%`` any run of characters, ``_`` one, ``escape`` before either (or
    itself) for the character itself. Greedy with one back-up point, the last ``%``: at
    most len(value) * len(pattern) steps, whatever the pattern."""
    items = []                  # ("%",) | ("_",) | ("c", character)
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escape is not None and c == escape and i + 1 < len(pattern):
            items.append(("c", pattern[i + 1]))
            i += 2
            continue
        items.append(("%",) if c == "%" else ("_",) if c == "_" else ("c", c))
        i += 1
    v = p = 0
    star = -1                   # the item after the last % seen, and where it took from
    star_v = 0
    while v < len(value):
        if p < len(items) and (items[p][0] == "_" or
                               (items[p][0] == "c" and items[p][1] == value[v])):
            v += 1
            p += 1
        elif p < len(items) and items[p][0] == "%":
            star, star_v = p + 1, v
            p += 1
        elif star >= 0:
            star_v += 1
            v, p = star_v, star
        else:
            return False
    while p < len(items) and items[p][0] == "%":
        p += 1
    return p == len(items)


class SqlFilter:
    """A consumer's ``amqp:sql-filter``: ``accepts`` as ``address.MessageFilter``'s."""

    def __init__(self, text: str):
        self.text = text
        self.tree = parse(text)

    def accepts(self, header: list, properties: list, application: dict) -> bool:
        priority = header[1][1] if len(header) > 1 else None
        fields = {}
        for name, value in zip(PROPERTY_FIELDS, properties):
            kind, v = value
            if kind == "uuid":
                v = v.bytes if hasattr(v, "bytes") else v
            fields[name] = v
        return evaluate(self.tree, Message(priority, fields, application)) is True
