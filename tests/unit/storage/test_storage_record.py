import pytest

from amqpbroker.storage.record import (Record, crc_ok, decode_header, decode_records, encode_batch,
                                       encode_batch_parts, header_plausible)


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


def test_parts_keep_large_bodies_uncopied_and_crc_covers_them():
    big = bytes(range(256)) * 64                           # 16 KiB: written from the record
    records = [Record(3, "x", "a", b"p", b"small"), Record(4, "x", "b", b"", big),
               Record(2, "x", "c", b"q", big + b"!"), Record(5, "", "", b"", b"tail")]
    parts, size, first_ts, max_ts = encode_batch_parts(9, records)
    assert any(p is big for p in parts) and len(parts) == 6   # header, small, big, small, big, small
    batch = b"".join(parts)
    assert (size, first_ts, max_ts) == (len(batch), 3, 5)
    assert batch == encode_batch(9, records)[0]
    assert crc_ok(batch) and decode_records(batch) == records


def test_writev_all_finishes_short_writes_and_splits_at_iov_max(monkeypatch, tmp_path):
    import os
    import random
    from amqpbroker.storage import fileformat
    rng = random.Random(1)
    real = os.writev
    calls = []

    def short_writev(fd, bufs):
        assert len(bufs) <= fileformat.IOV_MAX
        total = sum(len(b) for b in bufs)
        calls.append(len(bufs))
        return real(fd, [b"".join(bytes(b) for b in bufs)[:rng.randint(1, total)]])

    monkeypatch.setattr(os, "writev", short_writev)
    for count in (1, 3, fileformat.IOV_MAX + 500):
        parts = [bytes([i % 251]) * rng.choice((0, 1, 7, 300)) for i in range(count)]
        parts[0] = b"head"
        path = tmp_path / f"f{count}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            fileformat.writev_all(fd, parts, sum(map(len, parts)))
        finally:
            os.close(fd)
        assert path.read_bytes() == b"".join(parts)
    assert len(calls) > 3
