"""The ring link's batch codec (``contract.encode_many`` / ``decode_many``, C in
``storage/_record.c``) against the per-message encoding it replaced and its Python reference."""
import array
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpbroker import contract as c
from amqpbroker.storage import record as rec

WHOLE = b"\x00"
shortstr = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
records = st.builds(rec.Record, st.integers(0, 2**64 - 1), shortstr, shortstr,
                    st.binary(max_size=100), st.binary(max_size=2000), st.integers(0, 255))
# a Pubs' or a Dlvs' records: small, so that a list of them keeps the inputs as quick to draw as the rest
small_records = st.builds(rec.Record, st.integers(0, 2**64 - 1), shortstr, shortstr,
                          st.binary(max_size=20), st.binary(max_size=200), st.integers(0, 255))
u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
messages = st.one_of(
    st.builds(c.Pub, qid=u32, seq=u64, priority=st.integers(0, 255), track=st.booleans(),
              flags=st.integers(0, 255), record=records),
    st.builds(c.Pubs, qid=u32, seq=u64, priority=st.integers(0, 255), track=st.booleans(),
              flags=st.integers(0, 255), records=st.lists(small_records, max_size=3)),
    st.builds(c.Dlv, cid=u32, qid=u32, offset=u64, redelivered=st.booleans(), record=records),
    st.builds(c.Dlvs, cid=u32, qid=u32, offset=u64, records=st.lists(small_records, max_size=3)),
    # as a link decoded it (``run``): sent on again by the cluster forwarder
    st.builds(c.Dlvs, cid=u32, qid=u32, offset=u64,
              records=st.lists(small_records, max_size=3).map(rec.RecordRun.of)),
    # a dispatch run of part of a stored run: a view of its bytes (``StoredRun.span``)
    st.builds(c.Dlvs, cid=u32, qid=u32, offset=u64,
              records=st.lists(small_records, max_size=3).map(lambda rs: view_run(rs))),
    st.builds(c.Ack, qid=u32, seq=u64, offsets=st.lists(u64, max_size=5)),
    st.builds(c.Credit, grants=st.lists(st.tuples(u32, u32), max_size=3)),
    st.builds(c.Confirm, upto=u64, seen=u64, nacked=st.lists(u64, max_size=3)),
    st.builds(c.Reply, req=u32, ok=st.booleans(), value=st.one_of(st.none(), st.integers(),
                                                                  st.text(max_size=10))),
    st.builds(c.ReplyTo, token=shortstr, record=records),
)


def view_run(records: list) -> rec.RecordRun:
    """``records`` as a run whose data is a view of the middle of a bigger buffer."""
    data = rec.RecordRun.of(records).data
    return rec.RecordRun(memoryview(b"before" + data + b"after")[6:6 + len(data)], len(records))


def one_by_one(msgs, prefix=WHOLE):
    return [c.encode_bytes(m, prefix) for m in msgs]


def reference_other(raw):
    return c.decode(raw, 1)


@given(st.lists(messages, max_size=30), st.binary(min_size=1, max_size=3))
def test_a_batch_is_the_messages_encoded_one_by_one(msgs, prefix):
    """The bytes are the previous encoding's (encode_bytes of each message), back to back."""
    data, lens, count = c.encode_many(msgs, prefix, 1 << 30)
    expected = one_by_one(msgs, prefix)
    assert count == len(msgs)
    assert data == b"".join(expected)
    assert list(array.array("I", lens)) == [len(e) for e in expected]
    py = rec.pack_messages_py(msgs, c.HOT_ENCODE, lambda m: c.encode_bytes(m, prefix), prefix,
                             1 << 30)
    assert (data, lens, count) == py


@pytest.mark.parametrize("size_messages, pack_messages_at",
                         [(rec.size_messages, rec.pack_messages_at),
                          (rec.size_messages_py, rec.pack_messages_at_py)])
@given(msgs=st.lists(messages, max_size=30), prefix=st.binary(min_size=1, max_size=3),
       limit=st.integers(0, 3000), gaps=st.lists(st.integers(0, 9), min_size=30, max_size=30))
def test_sized_messages_written_at_offsets_are_the_batch(size_messages, pack_messages_at, msgs,
                                                         prefix, limit, gaps):
    """``size_many`` + ``write_many`` (how the ring link packs into the ring): the same
    lengths and bytes as ``encode_many``, each at the offset given, nothing else written."""
    fallback = lambda m: c.encode_bytes(m, prefix)      # noqa: E731
    data, lens, count = rec.pack_messages_py(msgs, c.HOT_ENCODE, fallback, prefix, limit)
    sized, lens2, count2 = size_messages(msgs, c.HOT_ENCODE, fallback, prefix, limit)
    assert (lens2, count2) == (lens, count)
    sizes = array.array("I", lens)
    offs, pos = array.array("Q"), 0
    for size, gap in zip(sizes, gaps):
        offs.append(pos + gap)
        pos += gap + size
    buf = bytearray(b"\xee" * (pos + 5))
    pack_messages_at(sized, buf, offs.tobytes(), count)
    expected, start = bytearray(b"\xee" * (pos + 5)), 0
    for off, size in zip(offs, sizes):
        expected[off:off + size] = data[start:start + size]
        start += size
    assert buf == expected


@pytest.mark.parametrize("size_messages, pack_messages_at",
                         [(rec.size_messages, rec.pack_messages_at),
                          (rec.size_messages_py, rec.pack_messages_at_py)])
def test_writing_sized_messages_checks_its_bounds(size_messages, pack_messages_at):
    msgs = [c.Dlv(cid=1, qid=2, offset=3, redelivered=False,
                  record=rec.Record(1, "ex", "rk", b"", b"body" * 10, 0))] * 2
    sized, lens, count = size_messages(msgs, c.HOT_ENCODE, None, WHOLE, 1 << 20)
    size = array.array("I", lens)[0]
    with pytest.raises(ValueError):         # past the buffer's end
        pack_messages_at(sized, bytearray(2 * size), array.array("Q", [0, size + 1]).tobytes(),
                         2)
    with pytest.raises(ValueError):         # more than were sized
        pack_messages_at(sized, bytearray(3 * size),
                         array.array("Q", [0, size, 2 * size]).tobytes(), 3)
    buf = bytearray(2 * size)
    pack_messages_at(sized, buf, array.array("Q", [0, size]).tobytes(), 2)
    assert bytes(buf) == c.encode_many(msgs, WHOLE, 1 << 20)[0]


@given(st.lists(messages, min_size=1, max_size=20), st.integers(0, 3000))
def test_a_batch_stops_before_the_first_message_over_the_limit(msgs, limit):
    expected = one_by_one(msgs)
    count = next((i for i, e in enumerate(expected) if len(e) > limit), len(msgs))
    data, lens, got = c.encode_many(msgs, WHOLE, limit)
    assert got == count
    assert data == b"".join(expected[:count])
    assert rec.pack_messages_py(msgs, c.HOT_ENCODE, lambda m: c.encode_bytes(m, WHOLE), WHOLE,
                               limit) == (data, lens, got)


@given(st.lists(messages, max_size=30), st.lists(st.binary(max_size=9), min_size=31,
                                                 max_size=31))
def test_decoding_a_batch_where_it_lies(msgs, gaps):
    """Records anywhere in a buffer (a ring's mapping: padding between them) decode to the
    messages sent, in C and in the reference alike."""
    buf, offs = bytearray(), array.array("Q")
    for msg, gap in zip(msgs, gaps):
        buf += gap
        data = c.encode_bytes(msg, WHOLE)
        offs.extend((len(buf), len(buf) + len(data)))
        buf += data
    buf += gaps[-1]
    got = c.decode_many(bytes(buf), offs.tobytes(), len(msgs), reference_other)
    assert got == msgs
    assert [type(m) for m in got] == [type(m) for m in msgs]
    assert all(type(m.record) is rec.Record for m in got if hasattr(m, "record"))
    assert rec.unpack_messages_py(bytes(buf), offs.tobytes(), len(msgs), c.HOT_DECODE, rec.Record,
                               reference_other) == msgs


def test_records_that_are_not_whole_hot_messages_go_to_the_callers_decoder():
    """Fragments (first byte 1 or 2) and cold messages reach ``other``; a None is dropped."""
    pub = c.Pub(qid=1, seq=2, priority=0, track=True, flags=0,
                record=rec.Record(1, "", "k", b"", b"x" * 50, 0))
    whole = c.encode_bytes(pub, WHOLE)
    pieces = [b"\x01" + whole[1:20], b"\x02" + whole[20:]]
    seen, parts = [], []

    def other(raw):
        seen.append(raw[0])
        if raw[0] == 0:
            return c.decode(raw, 1)
        parts.append(raw[1:])
        return c.decode(b"".join(parts)) if raw[0] == 2 else None
    ack = c.encode_bytes(c.Ack(qid=1, seq=3, offsets=[4]), WHOLE)
    buf = b"".join(pieces) + ack
    offs = array.array("Q", [0, len(pieces[0]), len(pieces[0]), len(pieces[0]) + len(pieces[1]),
                             len(buf) - len(ack), len(buf)]).tobytes()
    got = c.decode_many(buf, offs, 3, other)
    assert got == [pub, c.Ack(qid=1, seq=3, offsets=[4])]
    assert seen == [1, 2, 0]


@pytest.mark.parametrize("unpack_messages", [rec.unpack_messages, rec.unpack_messages_py])
def test_a_ring_record_longer_than_its_message_is_refused(unpack_messages):
    pub = c.Pub(qid=1, seq=2, priority=0, track=True, flags=0,
                record=rec.Record(1, "", "k", b"", b"body", 0))
    data = c.encode_bytes(pub, WHOLE) + b"junk"
    with pytest.raises(ValueError):
        unpack_messages(data, array.array("Q", [0, len(data)]).tobytes(), 1, c.HOT_DECODE,
                     rec.Record, reference_other)


@pytest.mark.parametrize("unpack_messages", [rec.unpack_messages, rec.unpack_messages_py])
@pytest.mark.parametrize("cut", [2, 10, 30, -1])
def test_a_truncated_hot_message_is_an_error_not_a_crash(unpack_messages, cut):
    pub = c.Dlv(cid=1, qid=2, offset=3, redelivered=False,
                record=rec.Record(1, "ex", "k", b"p", b"body", 0))
    data = c.encode_bytes(pub, WHOLE)[:cut]
    with pytest.raises(ValueError):
        unpack_messages(data, array.array("Q", [0, len(data)]).tobytes(), 1, c.HOT_DECODE,
                     rec.Record, reference_other)


def test_offsets_outside_the_buffer_are_refused():
    with pytest.raises(ValueError):
        c.decode_many(b"\x00" * 10, array.array("Q", [4, 20]).tobytes(), 1, reference_other)
    with pytest.raises(ValueError):
        c.decode_many(b"\x00" * 10, array.array("Q", [0, 4]).tobytes(), 2, reference_other)


def test_records_of_a_batch_share_equal_exchange_routing_key_and_properties():
    """A batch's records that repeat the record before's exchange, routing key or properties
    get the same (immutable) objects, not copies; any that differ get their own, right."""
    def dlv(i, ex, rk, props):
        return c.Dlv(cid=1, qid=2, offset=i, redelivered=False,
                     record=rec.Record(i, ex, rk, props, b"body%d" % i, 0))
    msgs = [dlv(0, "ex", "rk", b"\x10\x00"), dlv(1, "ex", "rk", b"\x10\x00"),
            dlv(2, "ex", "other", b"\x10\x00"), dlv(3, "ex2", "other", b"\x90\x00\x01"),
            dlv(4, "ex2", "other", b"\x90\x00\x01"), dlv(5, "", "", b"")]
    data, lens, count = c.encode_many(msgs, WHOLE, 1 << 20)
    offs, pos = array.array("Q"), 0
    for size in array.array("I", lens):
        offs.extend((pos, pos + size))
        pos += size
    got = c.decode_many(data, offs.tobytes(), count, reference_other)
    assert got == msgs
    r = [m.record for m in got]
    assert r[1].exchange is r[0].exchange and r[1].routing_key is r[0].routing_key
    assert r[1].properties is r[0].properties and r[2].properties is r[0].properties
    assert r[4].exchange is r[3].exchange and r[4].properties is r[3].properties
    assert r[3].properties is not r[2].properties and r[1].body is not r[0].body


def test_records_of_a_batch_share_an_equal_timestamp():
    """A read's publishes carry one millisecond (the session's clock): a record whose timestamp
    is the record before's gets the same int object, not a new one; a different one its own."""
    ts = 1_700_000_000_123
    records = [rec.Record(t, "", "q", b"", b"b", 0) for t in (ts, ts, ts + 1, ts + 1, ts)]
    m = c.Pubs(qid=1, seq=1, priority=0, track=False, flags=0, records=records)
    data, lens, count = c.encode_many([m], WHOLE, 1 << 20)
    # decoded as a list of records (the codec's ``*`` format: a ``Pubs`` itself decodes as a
    # ``RecordRun`` now, whose records a plain queue never decodes)
    as_list = {c.Pubs.TYPE_ID: ("IQB?B*", c.Pubs)}
    got = rec.unpack_messages(data, array.array("Q", [0, len(data)]).tobytes(), 1, as_list,
                              rec.Record, reference_other)
    assert got == [m] and type(got[0].records) is list
    r = got[0].records
    assert r[1].timestamp is r[0].timestamp and r[3].timestamp is r[2].timestamp
    assert r[2].timestamp == ts + 1 and r[4].timestamp == ts and r[4].timestamp is not r[3].timestamp


@pytest.mark.parametrize("size_messages, pack_messages_at",
                         [(rec.size_messages, rec.pack_messages_at),
                          (rec.size_messages_py, rec.pack_messages_at_py)])
def test_record_fields_in_other_buffers_encode_as_bytes_do(size_messages, pack_messages_at):
    """Properties and body are usually bytes (sized and copied without taking a buffer); a
    memoryview or bytearray (a slice of a read buffer) gives the same bytes on the wire."""
    plain = rec.Record(5, "ex", "rk", b"\x10\x00", b"body" * 10, 1)
    views = rec.Record(5, "ex", "rk", bytearray(b"\x10\x00"), memoryview(b"xx" + b"body" * 10 + b"yy")[2:42], 1)
    assert bytes(views.body) == plain.body
    msgs = [c.Dlv(cid=1, qid=2, offset=3, redelivered=False, record=r) for r in (plain, views)]
    want = one_by_one(msgs[:1]) * 2
    data, lens, count = c.encode_many(msgs, WHOLE, 1 << 20)
    assert (data, count) == (b"".join(want), 2)
    sized, lens, count = size_messages(msgs, c.HOT_ENCODE, lambda m: c.encode_bytes(m, WHOLE),
                                       WHOLE, 1 << 20)
    buf = bytearray(len(data))
    pack_messages_at(sized, buf, array.array("Q", [0, len(want[0])]).tobytes(), count)
    assert bytes(buf) == data


def test_a_reads_publishes_are_one_header_then_their_records_in_the_log_layout():
    """``Pubs`` is a hot message, not a pickle: its fixed fields once, a u32 count, then each
    record exactly as the log stores it (so the ring link carries a read's publishes to one
    queue as one record, encoded and decoded in the batch's one C call)."""
    records = [rec.Record(1_700_000_000_000 + i, "amq.direct", "k", b"\x00", b"x" * i, i & 1)
               for i in range(3)]
    m = c.Pubs(qid=7, seq=2**40, priority=3, track=True, flags=1, records=records)
    expected = (WHOLE + struct.pack(">BIQB?BI", c.Pubs.TYPE_ID, 7, 2**40, 3, True, 1, 3)
                + b"".join(rec.encode_record(r) for r in records))
    assert c.encode_bytes(m, WHOLE) == expected
    data, lens, count = c.encode_many([m], WHOLE, 1 << 20)
    assert (data, count) == (expected, 1)
    offs = array.array("Q", [0, len(data)]).tobytes()
    assert c.decode_many(data, offs, 1, reference_other) == [m]
    for cut in range(2, len(expected) - 1):          # truncated: an error, not a crash
        with pytest.raises(ValueError):
            rec.unpack_messages(expected[:cut], array.array("Q", [0, cut]).tobytes(), 1,
                                c.HOT_DECODE, rec.Record, reference_other)


def test_a_run_of_deliveries_decodes_as_its_records_bytes_not_a_record_each():
    """``Dlvs``' records travel as ``Pubs``' do, and are decoded as a ``RecordRun``: the
    records' bytes as they came and their count (the front-end builds the frames from them
    in C), equal to the records sent; a ``RecordRun`` encodes to the same bytes as the list
    (the cluster forwarder sends on what it read), in C and in the reference alike."""
    records = [rec.Record(1_700_000_000_000 + i, "amq.direct", "k%d" % i, b"\x10\x00",
                          b"x" * (i * 1000), i & 1) for i in range(4)]
    sent = c.Dlvs(cid=3, qid=7, offset=2**33, records=records)
    wire = c.encode_bytes(sent, WHOLE)
    assert wire == (WHOLE + struct.pack(">BIIQI", c.Dlvs.TYPE_ID, 3, 7, 2**33, 4)
                    + b"".join(rec.encode_record(r) for r in records))
    offs = array.array("Q", [0, len(wire)]).tobytes()
    for got in (c.decode_many(wire, offs, 1, reference_other)[0],
                rec.unpack_messages_py(wire, offs, 1, c.HOT_DECODE, rec.Record,
                                       reference_other)[0],
                c.decode(wire, 1)):
        run = got.records
        assert type(run) is rec.RecordRun
        assert run.data == b"".join(rec.encode_record(r) for r in records)
        assert len(run) == 4 and list(run) == records and got == sent
        again = got._replace(qid=9)
        assert c.encode_bytes(again, WHOLE) == c.encode_bytes(sent._replace(qid=9), WHOLE)
        assert c.encode_many([again], WHOLE, 1 << 20)[0] == c.encode_bytes(again, WHOLE)
        assert rec.pack_messages_py([again], c.HOT_ENCODE, None, WHOLE, 1 << 20)[0] \
            == c.encode_bytes(again, WHOLE)
    empty = c.Dlvs(cid=1, qid=2, offset=3, records=[])
    data = c.encode_bytes(empty, WHOLE)
    [got] = c.decode_many(data, array.array("Q", [0, len(data)]).tobytes(), 1, reference_other)
    assert type(got.records) is rec.RecordRun and got.records.data == b"" and got == empty


@pytest.mark.parametrize("unpack_messages", [rec.unpack_messages, rec.unpack_messages_py])
def test_a_truncated_or_malformed_run_is_an_error_not_a_crash(unpack_messages):
    records = [rec.Record(1, "ex", "rk", b"\x10\x00", b"body", 0),
               rec.Record(2, "", "q", b"", b"b", 1)]
    data = c.encode_bytes(c.Dlvs(cid=1, qid=2, offset=3, records=records), WHOLE)
    for cut in range(2, len(data)):
        with pytest.raises(ValueError):
            unpack_messages(data[:cut], array.array("Q", [0, cut]).tobytes(), 1, c.HOT_DECODE,
                            rec.Record, reference_other)
    bad = bytearray(data)
    bad[len(WHOLE) + 17 + 4 + 13] = 200          # the first record's exchange: past its end
    with pytest.raises(ValueError):
        unpack_messages(bytes(bad), array.array("Q", [0, len(bad)]).tobytes(), 1,
                        c.HOT_DECODE, rec.Record, reference_other)


@pytest.mark.parametrize("unpack_messages", [rec.unpack_messages, rec.unpack_messages_py])
def test_a_lent_run_is_a_read_only_view_of_the_buffer_not_a_copy(unpack_messages):
    """``decode_many(..., lend=True)`` (a front-end's ring link): a ``Dlvs``'s run is a
    read-only memoryview of the ring's memory where the records lie, equal to the copy it
    replaces; a ``Pubs``' run (the worker keeps it) is still copied out."""
    records = [rec.Record(1_700_000_000_000 + i, "amq.direct", "k%d" % i, b"\x10\x00",
                          bytes([i]) * (i * 5000), i & 1) for i in range(4)]
    msgs = [c.Dlvs(cid=3, qid=7, offset=9, records=records),
            c.Pubs(qid=7, seq=1, priority=0, track=True, flags=0, records=records[:2]),
            c.Ack(qid=7, seq=2, offsets=[1])]
    wires = [c.encode_bytes(m, WHOLE) for m in msgs]
    buf = bytearray(b"".join(wires))
    ends = [sum(map(len, wires[:i + 1])) for i in range(len(wires))]
    offs = array.array("Q", [x for i, end in enumerate(ends)
                             for x in ((ends[i - 1] if i else 0), end)]).tobytes()
    got = unpack_messages(buf, offs, 3, c.HOT_DECODE_LENT, rec.Record, reference_other)
    assert got == msgs
    lent, kept = got[0].records, got[1].records
    assert type(lent.data) is memoryview and lent.data.readonly
    assert bytes(lent.data) == b"".join(rec.encode_record(r) for r in records)
    assert type(kept.data) is bytes
    last = ends[0] - 1                              # the last body's last byte
    buf[last] ^= 0xFF                               # the view shows the buffer, a copy not
    assert lent.data[-1] == buf[last]
    assert list(lent) != records
    lent.keep()                                     # owned: the buffer's changes stop here
    assert type(lent.data) is bytes
    buf[last] ^= 0xFF
    assert lent.data[-1] != buf[last] and list(lent) != records


@pytest.mark.parametrize("size_messages, pack_messages_at",
                         [(rec.size_messages, rec.pack_messages_at),
                          (rec.size_messages_py, rec.pack_messages_at_py)])
def test_a_run_that_is_a_view_encodes_as_its_bytes_do(size_messages, pack_messages_at):
    """A ``Dlvs`` of part of a stored run carries a view of the run's bytes (no copy made at
    dispatch): on the wire it is the run of the same bytes, in C and in the reference; a
    released view is refused (an error, never a read of memory the view no longer holds)."""
    records = [rec.Record(1_700_000_000_000 + i, "", "q", b"", bytes([i]) * 1024, 0)
               for i in range(3)]
    plain = c.Dlvs(cid=1, qid=2, offset=3, records=rec.RecordRun.of(records))
    viewed = c.Dlvs(cid=1, qid=2, offset=3, records=view_run(records))
    want = c.encode_bytes(plain, WHOLE)
    assert c.encode_bytes(viewed, WHOLE) == want
    data, lens, count = c.encode_many([viewed, plain], WHOLE, 1 << 20)
    assert (data, count) == (want * 2, 2)
    sized, lens, count = size_messages([viewed], c.HOT_ENCODE,
                                       lambda m: c.encode_bytes(m, WHOLE), WHOLE, 1 << 20)
    buf = bytearray(len(want))
    pack_messages_at(sized, buf, array.array("Q", [0]).tobytes(), count)
    assert bytes(buf) == want
    gone = view_run(records)
    gone.data.release()
    with pytest.raises(ValueError):
        c.encode_many([c.Dlvs(cid=1, qid=2, offset=3, records=gone)], WHOLE, 1 << 20)
