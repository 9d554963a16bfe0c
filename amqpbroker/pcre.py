"""Regular expressions as RabbitMQ reads them (Erlang's ``re``, which is PCRE), run by ``re``.

RabbitMQ matches policy patterns, permission patterns and the management API's name filters
with PCRE (``re:run(Name, Pattern, [{capture, none}])``: a search, not anchored). Python's
``re`` reads most PCRE syntax the same way. Where it does not, a pattern written for RabbitMQ,
or imported from its definitions, would be refused here, or worse, mean something else:
to ``re``, ``[[:digit:]]`` is the set ``[:dgit`` followed by a literal ``]``. ``translate``
rewrites the PCRE constructs ``re`` lacks into ones it has:

    \\z                 end of the subject               -> \\Z
    \\Z                 end, or before a final newline   -> (?=\\n?\\Z)
    \\Q...\\E            quoted literal text              -> the text, escaped
    \\h, \\H             horizontal white space (or not)  -> [ \\t\\xa0], [^ \\t\\xa0]
    \\R                 any newline sequence             -> (?:\\r\\n|[\\n\\x0b\\x0c\\r\\x85])
    (?<name>..), (?'name'..)   named groups             -> (?P<name>..)
    \\k<name>, \\k'name', \\k{name}, \\g{name}   back references -> (?P=name)
    [[:alpha:]] ...     POSIX classes in a set           -> their ranges ([:^alpha:] refused)
    [ inside a set      a literal                        -> \\[

What has no equivalent in ``re`` (``\\p{..}`` Unicode properties, recursion, callouts, ...)
stays as written and ``re`` refuses it: the API answers 400 with its reason, as for any
invalid pattern. Python-only syntax that PCRE also takes (``(?P<name>..)``) passes as is.
"""
from __future__ import annotations

import functools
import re

POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": "\\t\\n\\x0b\\x0c\\r ", "blank": " \\t", "xdigit": "0-9A-Fa-f", "word": "\\w",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), "cntrl": "\\x00-\\x1f\\x7f",
    "print": "\\x20-\\x7e", "graph": "\\x21-\\x7e", "ascii": "\\x00-\\x7f",
}
HSPACE = " \\t\\xa0"
NEWLINE = "(?:\\r\\n|[\\n\\x0b\\x0c\\r\\x85])"
SIMPLE = {"z": "\\Z", "Z": "(?=\\n?\\Z)", "h": f"[{HSPACE}]", "H": f"[^{HSPACE}]",
          "R": NEWLINE}                 # escapes rewritten as they stand
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BACKREF_CLOSE = {"<": ">", "'": "'", "{": "}"}


def translate(pattern: str) -> str:
    """``pattern`` (PCRE) rewritten for Python's ``re``; ``re.error`` for a POSIX class
    that has no equivalent here."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            i = _escape(pattern, i, out)
        elif ch == "[":
            i = _set(pattern, i, out)
        elif pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
        elif pattern.startswith("(?'", i):
            end = pattern.find("'", i + 3)
            if end < 0:
                raise re.error("unterminated group name", pattern, i)
            out.append(f"(?P<{pattern[i + 3:end]}>")
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _escape(p: str, i: int, out: list[str]) -> int:
    """The escape at ``p[i]`` (a backslash with a character after it), outside a set."""
    nxt = p[i + 1]
    if nxt == "Q":
        end = p.find("\\E", i + 2)
        out.append(re.escape(p[i + 2:] if end < 0 else p[i + 2:end]))
        return len(p) if end < 0 else end + 2
    if nxt == "E":                          # \E with no \Q before it: ignored, as PCRE does
        return i + 2
    if nxt in SIMPLE:
        out.append(SIMPLE[nxt])
        return i + 2
    if nxt in "kg" and p[i + 2:i + 3] in _BACKREF_CLOSE and (nxt == "k" or p[i + 2] == "{"):
        close = _BACKREF_CLOSE[p[i + 2]]
        end = p.find(close, i + 3)
        name = p[i + 3:end] if end > 0 else ""
        if _NAME.fullmatch(name):
            out.append(f"(?P={name})")
            return end + 1
    out.append(p[i:i + 2])
    return i + 2


def _set(p: str, i: int, out: list[str]) -> int:
    """The character set that opens at ``p[i]``, to its closing ``]`` (a ``]`` first in
    the set is a literal, in PCRE and ``re`` alike); an unterminated one is left to ``re``."""
    j = i + 1
    head = "["
    if p[j:j + 1] == "^":
        head, j = "[^", j + 1
    body = []
    if p[j:j + 1] == "]":
        body.append("\\]")
        j += 1
    while j < len(p) and p[j] != "]":
        if p[j] == "\\" and j + 1 < len(p):
            body.append(p[j:j + 2])
            j += 2
            continue
        posix = _POSIX_CLASS.match(p, j)
        if posix:
            negated, name = posix.groups()
            if negated or name not in POSIX:
                raise re.error(f"POSIX class [:{negated}{name}:] is not supported", p, j)
            body.append(POSIX[name])
            j = posix.end()
            continue
        body.append("\\[" if p[j] == "[" else p[j])
        j += 1
    if j >= len(p):                         # no closing ]: let re say so
        out.append(p[i:])
        return len(p)
    out.append(head + "".join(body) + "]")
    return j + 1


@functools.lru_cache(maxsize=1024)
def compile(pattern: str, flags: int = 0) -> re.Pattern:
    """``pattern`` (PCRE) compiled by ``re``; ``re.error`` when it cannot be."""
    return re.compile(translate(pattern), flags)


def search(pattern: str, name: str, flags: int = 0) -> bool:
    """Whether ``pattern`` matches anywhere in ``name``, as RabbitMQ's ``re:run`` does."""
    return compile(pattern, flags).search(name) is not None
