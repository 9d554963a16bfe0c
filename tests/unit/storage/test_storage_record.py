import pytest

from amqpbroker.storage.record import (Record, crc_ok, decode_header, decode_records, encode_batch,
                                       header_plausible)


def test_batch_roundtrip_keeps_every_field():
    records = [Record(1_700_000_000_000, "amq.topic", "a.b.ç", b"\x80\x00\x02", b"x" * 300, 1),
               Record(1_699_999_999_000, "", "", b"", b""),
               Record(5, "e" * 255, "k" * 255, b"p", b"\x00\xff")]
    batch, first_ts, max_ts = encode_batch(42, records)
    h = decode_header(batch)
    assert (h.base_offset, h.count, h.first_ts, h.max_ts) == (42, 3, 1_700_000_000_000, 1_700_000_000_000)
    assert (first_ts, max_ts) == (h.first_ts, h.max_ts)
    assert h.size == len(batch) and header_plausible(h) and crc_ok(batch)
    assert decode_records(batch) == records


@pytest.mark.parametrize("position", [4, 10, 14, 18, 25, 40, -1])
def test_crc_covers_offsets_count_timestamps_and_records(position):
    batch = bytearray(encode_batch(7, [Record(1, "x", "y", b"p", b"body")])[0])
    batch[position] ^= 0x01
    assert not crc_ok(bytes(batch))


def test_shortstr_limits_are_enforced():
    with pytest.raises(ValueError):
        encode_batch(0, [Record(1, "e" * 256, "", b"", b"")])
    with pytest.raises(ValueError):
        encode_batch(0, [Record(1, "", "k" * 256, b"", b"")])
