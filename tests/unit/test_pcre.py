"""pcre.py: RabbitMQ's patterns (PCRE, matched anywhere in the name) run by Python's ``re``.
The matches below are RabbitMQ 3.10.8's: each pattern was set as a policy there and the
queues it applied to read back (interop/test_policies.py runs the same against both)."""
import re
import warnings

import pytest

from amqpbroker import pcre


@pytest.mark.parametrize("pattern, matching, not_matching", [
    ("^pa[[:digit:]]+$", ["pa7", "pa123"], ["pax", "pa:", "pa"]),
    ("^p[[:alpha:]_[:digit:]]$", ["pa", "p_", "p5"], ["p-", "p:"]),
    ("^p[^[:space:]]$", ["px"], ["p ", "p\t"]),
    ("^p[[:xdigit:]]+$", ["pbeef", "p09"], ["pg"]),
    ("^p[[:punct:]]$", ["p.", "p]", "p\\"], ["pa"]),
    ("^pb7\\z", ["pb7"], ["pb77", "pb7\n"]),
    ("^pb7\\Z", ["pb7", "pb7\n"], ["pb77", "pb7\n\n"]),
    ("^\\Qpc.b\\E$", ["pc.b"], ["pcxb"]),
    ("^\\Qa[b\\E", ["a[b"], ["ab"]),
    ("^(?<x>pd)\\k<x>$", ["pdpd"], ["pdpe"]),
    ("^(?'y'pe)\\k{y}$", ["pepe"], ["pepf"]),
    ("^(?P<z>pe)\\g{z}$", ["pepe"], ["pepf"]),
    ("^(?<=x)|^pf(?<!x)y$", ["pfy"], ["pfx"]),
    ("^pf\\hx$", ["pf x", "pf\tx"], ["pfxx", "pf\nx"]),
    ("^pf\\Hx$", ["pfyx"], ["pf x"]),
    ("^a\\Rb$", ["a\r\nb", "a\nb"], ["ab"]),
    ("^pg[[]$", ["pg["], ["pgx"]),
    ("^pg[]x]$", ["pg]", "pgx"], ["pgy"]),
    ("ph", ["xphx", "ph"], ["y"]),                  # a search, not anchored
    ("^amq\\.gen-.*", ["amq.gen-1"], ["xamq.gen-1"]),
])
def test_patterns_match_as_on_rabbitmq(pattern, matching, not_matching):
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no "possible nested set" left to re
        assert [n for n in matching if not pcre.search(pattern, n)] == []
        assert [n for n in not_matching if pcre.search(pattern, n)] == []


@pytest.mark.parametrize("pattern", [
    "^a[[:^digit:]]",           # PCRE takes it; no equivalent here
    "^a[[:nosuch:]]",
    "^a\\p{L}",                 # Unicode properties: re has none
    "(",
    "^a[b",
])
def test_what_re_cannot_run_is_refused(pattern):
    with pytest.raises(re.error):
        pcre.compile(pattern)


def test_python_syntax_pcre_also_takes_passes_as_is():
    assert pcre.translate("^(?P<n>a)(?P=n)$") == "^(?P<n>a)(?P=n)$"
    assert pcre.translate("^orders\\.[a-z]+$") == "^orders\\.[a-z]+$"
