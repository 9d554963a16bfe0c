"""``properties.x_death`` (the x-death history read from the property bytes, nothing decoded
but each entry's queue and reason) against pamqp's full decode, and the dead-letter record
built from it (``worker/deadletter.py``: the entry of this queue and reason counted and put
first, every other entry kept byte for byte) against what decoding everything would give."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import hypothesis
import hypothesis.strategies as hs

from amqpbroker.protocol import properties as P
from amqpbroker.storage.record import Record
from amqpbroker.testing import strategies as S
from amqpbroker.worker.deadletter import dead_letter_record

NAMES = hs.sampled_from(["q1", "q2", "q3"])
REASONS = hs.sampled_from(["expired", "rejected", "maxlen", "delivery_limit"])
# what a queue or reason entry may hold: mostly a name, now and then anything
QUEUE_VALUES = hs.one_of(NAMES.map(lambda t: (b"S" + S.longstr(t.encode()), t)), S.SCALARS)
REASON_VALUES = hs.one_of(REASONS.map(lambda t: (b"S" + S.longstr(t.encode()), t)), S.SCALARS)
DEATH = hs.lists(hs.one_of(
    hs.tuples(hs.just("queue"), QUEUE_VALUES), hs.tuples(hs.just("reason"), REASON_VALUES),
    hs.tuples(hs.just("count"), S.SCALARS), hs.tuples(S.KEYS, S.VALUES)), max_size=6).map(
    S.table)
ELEMENTS = hs.lists(hs.one_of(DEATH, DEATH, DEATH, S.VALUES), max_size=8)


@hs.composite
def with_history(draw):
    """(raw properties whose headers hold an x-death array among others, the array's
    decoded value)."""
    others = draw(hs.lists(hs.tuples(S.KEYS.filter(lambda k: k != "x-death"), S.VALUES),
                           max_size=3))
    history = S.array(draw(ELEMENTS))
    at = draw(hs.integers(0, len(others)))
    entries = others[:at] + [("x-death", history)] + others[at:]
    wire, _ = S.table(entries)
    expiration = draw(hs.one_of(hs.none(), hs.sampled_from(["0", "60000"])))
    flags, tail = P.F_HEADERS, b""
    if expiration is not None:
        flags |= P.F_EXPIRATION
        tail = S.shortstr(expiration.encode())
    return struct.pack(">H", flags) + wire[1:] + tail, history[1]


def text_or_none(v):
    return v if isinstance(v, str) else None


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(with_history())
def test_x_death_reads_what_the_full_decode_reads(case):
    raw, history = case
    read = P.x_death(raw)
    assert len(read) == len(history)
    for (queue, reason, wire), value in zip(read, history):
        assert S.same_value(P.decode_value(wire), value)
        if isinstance(value, dict):
            assert (queue, reason) == (text_or_none(value.get("queue")),
                                       text_or_none(value.get("reason")))
        else:
            assert (queue, reason) == (None, None)
    assert S.same_value(P.decode(raw).headers["x-death"], history)


def test_no_history():
    assert P.x_death(P.encode(P.commands.Basic.Properties())) == []
    assert P.x_death(P.encode(P.commands.Basic.Properties(headers={"a": 1}))) == []
    assert P.x_death(P.encode(P.commands.Basic.Properties(headers={"x-death": "x"}))) == []


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(with_history(), NAMES, REASONS)
@hypothesis.example((P.encode(P.commands.Basic.Properties(headers={"x-death": [
    {"queue": "q1", "reason": "expired", "count": "three"}]})),
    [{"queue": "q1", "reason": "expired", "count": "three"}]), "q1", "expired")
def test_the_dead_letter_counts_its_entry_and_keeps_the_others(case, name, reason):
    raw, history = case
    queue = SimpleNamespace(name=name, args=SimpleNamespace(dlx="dlx", dlrk=None))
    new, keys = dead_letter_record(queue, Record(1, "ex", "rk", raw, b"body", 1), reason)
    assert keys == ["rk"] and (new.exchange, new.routing_key, new.body) == ("dlx", "rk", b"body")
    out = P.decode(new.properties)
    assert out.expiration is None
    # what decoding everything and editing the history would give
    tables = [d for d in history if isinstance(d, dict)]
    match = next((d for d in tables if d.get("queue") == name and d.get("reason") == reason),
                 None)
    others = [d for d in tables if d is not match]
    first, *rest = out.headers["x-death"]
    assert S.same_value(rest, others)
    base = dict(match) if match is not None else {
        "count": 0, "reason": reason, "queue": name, "exchange": "ex", "routing-keys": ["rk"]}
    count = base.get("count", 0)
    assert first["count"] == (count if type(count) is int else 0) + 1
    expiration = P.scan(raw).expiration
    if expiration is not None:
        assert first["original-expiration"] == expiration
    for key, value in base.items():
        if key not in ("count", "time", "original-expiration"):
            assert S.same_value(first[key], value), key
    for key, value in (("x-first-death-queue", name), ("x-first-death-reason", reason)):
        assert out.headers[key] == value
