"""The C record codec (``storage/_record.c``) against its Python reference, on any record."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpbroker import contract
from amqpbroker.storage import record as rec

shortstr = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
records = st.builds(rec.Record, st.integers(0, 2**64 - 1), shortstr, shortstr,
                    st.binary(max_size=200), st.binary(max_size=3000), st.integers(0, 255))


def test_the_c_codec_is_built():
    """setup.py builds it; without it every link pays the Python codec's price."""
    assert rec.NATIVE
    assert rec.pack_records is not rec.pack_records_py      # rebuilt since it was added


@given(records, st.binary(max_size=4))
def test_pack_record_matches_the_reference(r, prefix):
    args = (prefix, r.timestamp, r.flags, r.exchange, r.routing_key, r.properties, r.body)
    assert rec.pack_record(*args) == rec.pack_record_py(*args)


@given(records, st.binary(max_size=4))
def test_unpack_record_matches_the_reference(r, prefix):
    data = rec.pack_record_py(prefix, r.timestamp, r.flags, r.exchange, r.routing_key,
                              r.properties, r.body)
    assert rec.unpack_record(data, len(prefix)) == rec.unpack_record_py(data, len(prefix))
    assert rec.decode_record(data, len(prefix)) == (r, len(data))


@given(records, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.booleans())
def test_hot_messages_match_the_reference(r, cid, offset, redelivered):
    msg = contract.Dlv(cid=cid, qid=7, offset=offset, redelivered=redelivered, record=r)
    fmt = "IIQ?"
    packed = rec.pack_message(b"\x00", msg.TYPE_ID, fmt, msg)
    assert packed == rec.pack_message_py(b"\x00", msg.TYPE_ID, fmt, msg)
    got = rec.unpack_message(packed, 1, fmt, contract.Dlv, rec.Record)
    assert got == rec.unpack_message_py(packed, 1, fmt, contract.Dlv, rec.Record) == msg
    assert type(got) is contract.Dlv and type(got.record) is rec.Record


@pytest.mark.parametrize("cut", [1, 5, 20, -1])
def test_a_truncated_record_is_an_error_not_a_crash(cut):
    data = rec.pack_record_py(b"", 1, 0, "ex", "rk", b"p", b"body")
    with pytest.raises(ValueError):
        rec.unpack_record(data[:cut], 0)
    with pytest.raises(ValueError):
        rec.unpack_record_py(data[:cut], 0)


def test_a_record_whose_lengths_disagree_is_refused():
    data = bytearray(rec.pack_record_py(b"", 1, 0, "ex", "rk", b"p", b"body"))
    data[-10] += 1         # the properties' length (low byte) now overlaps the body length
    with pytest.raises(ValueError):
        rec.unpack_record(bytes(data), 0)


big_records = st.builds(rec.Record, st.integers(0, 2**64 - 1), shortstr, shortstr,
                        st.binary(max_size=200),
                        st.binary(max_size=3000) | st.binary(min_size=40, max_size=120),
                        st.integers(0, 255))


@given(st.lists(big_records, min_size=1, max_size=8), st.integers(0, 3001))
def test_pack_records_matches_the_reference(records, separate):
    """The batch loop: equal parts (bodies at or over ``separate`` apart), size and times."""
    got = rec.pack_records(records, separate)
    assert got == rec.pack_records_py(records, separate)
    parts = got[0]
    assert parts[0] == b"" and sum(map(len, parts)) == got[1]


@given(st.lists(records, min_size=1, max_size=4))
def test_encode_batch_parts_takes_any_buffer_body(records):
    """A body that is not bytes (a memoryview) goes through the reference, to the same batch."""
    viewed = [r._replace(body=memoryview(r.body)) for r in records]
    assert rec.encode_batch(3, viewed) == rec.encode_batch(3, records)
    assert rec.decode_records(rec.encode_batch(3, records)[0]) == records


def test_pack_records_refuses_long_names_as_the_reference_does():
    r = rec.Record(1, "x" * 256, "", b"", b"")
    with pytest.raises(ValueError, match="shortstrs"):
        rec.pack_records([r], 8192)
    with pytest.raises(ValueError, match="shortstrs"):
        rec.pack_records_py([r], 8192)


@given(st.lists(records, min_size=1, max_size=8), st.integers(0, 2**63))
def test_decode_records_matches_the_reference(records, base):
    """A batch's records decoded in C (``unpack_records``) are the reference's, of type
    ``Record``; the C path is the one ``decode_records`` takes."""
    batch = rec.encode_batch(base, records)[0]
    got = rec.decode_records(batch)
    assert got == rec.decode_records_py(batch) == records
    assert all(type(r) is rec.Record for r in got)
    assert rec._unpack_records is not None


@given(st.lists(records, min_size=1, max_size=4), st.data())
def test_a_cut_or_altered_batch_is_an_error_in_both(records, data):
    """Not a crash: what the reference refuses (a length that does not fit), C refuses."""
    batch = bytearray(rec.encode_batch(0, records)[0])
    if data.draw(st.booleans()):
        batch = batch[:data.draw(st.integers(rec.BATCH_HEADER_SIZE, len(batch) - 1))]
    else:
        at = data.draw(st.integers(rec.BATCH_HEADER_SIZE, len(batch) - 1))
        batch[at] ^= data.draw(st.integers(1, 255))
    outcomes = []
    for decode in (rec.decode_records, rec.decode_records_py):
        try:
            outcomes.append(decode(bytes(batch)))
        except Exception as e:          # noqa: BLE001 - which one is not the point
            outcomes.append(type(e).__name__)
    if isinstance(outcomes[1], list):
        assert outcomes[0] == outcomes[1]
    else:
        assert not isinstance(outcomes[0], list), outcomes
