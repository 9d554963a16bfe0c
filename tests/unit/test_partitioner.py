"""Kafka's default partitioner, checked against Kafka's own test vectors
(``clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java``, ``testMurmur2``)."""
from __future__ import annotations

import pytest

from amqpbroker.partitioner import key_bytes, murmur2, partition_of, to_positive

# UtilsTest.testMurmur2: every tail length (0, 2, 3 bytes left over after the 4-byte words)
KAFKA_MURMUR2 = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize("key,expected", KAFKA_MURMUR2, ids=[k.decode() for k, _ in KAFKA_MURMUR2])
def test_murmur2_matches_kafka(key, expected):
    assert murmur2(key) == expected


def test_to_positive_clears_the_sign_bit_as_kafka():
    # UtilsTest.testAbs / toPositive: Integer.MIN_VALUE -> 0, -1 -> Integer.MAX_VALUE
    assert to_positive(-2**31) == 0
    assert to_positive(-1) == 2**31 - 1
    assert to_positive(0) == 0
    assert to_positive(2**31 - 1) == 2**31 - 1


def test_partition_of_is_kafkas_formula():
    # (murmur2 & 0x7fffffff) % n: "foobar" -> 1357151166
    assert to_positive(murmur2(b"foobar")) == 1357151166
    assert partition_of(b"foobar", 50) == 16
    assert partition_of(b"foobar", 6) == 1357151166 % 6
    assert partition_of(b"21", 6) == (-973932308 & 0x7fffffff) % 6
    assert partition_of(b"abc", 1) == 0


def java_murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2 transliterated with Java's signed bytes and int overflow, to
    check keys beyond the published vectors (high bytes, a one-byte tail)."""
    def i32(x):
        x &= 0xFFFFFFFF
        return x - (1 << 32) if x & 0x80000000 else x

    def ushr(x, n):
        return (x & 0xFFFFFFFF) >> n
    signed = [b - 256 if b > 127 else b for b in data]
    length = len(signed)
    m, r = 0x5bd1e995, 24
    h = i32(0x9747b28c ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = ((signed[i4] & 0xff) + ((signed[i4 + 1] & 0xff) << 8)
             + ((signed[i4 + 2] & 0xff) << 16) + ((signed[i4 + 3] & 0xff) << 24))
        k = i32(k * m)
        k ^= ushr(k, r)
        k = i32(k * m)
        h = i32(h * m)
        h = i32(h ^ k)
    rest = length % 4
    base = length & ~3
    if rest == 3:
        h = i32(h ^ ((signed[base + 2] & 0xff) << 16))
    if rest >= 2:
        h = i32(h ^ ((signed[base + 1] & 0xff) << 8))
    if rest >= 1:
        h = i32(h ^ (signed[base] & 0xff))
        h = i32(h * m)
    h = i32(h ^ ushr(h, 13))
    h = i32(h * m)
    h = i32(h ^ ushr(h, 15))
    return h


@pytest.mark.parametrize("key", [b"", b"x", b"\xff", b"\x80\x81\x82\x83\xfe", "ключ-😀".encode(),
                                 bytes(range(256))])
def test_murmur2_on_any_bytes_as_javas(key):
    assert murmur2(key) == java_murmur2(key)


def test_java_transliteration_agrees_with_the_vectors():
    for key, expected in KAFKA_MURMUR2:
        assert java_murmur2(key) == expected


def test_key_bytes():
    assert key_bytes("ключ") == "ключ".encode()
    assert key_bytes(b"\x00\xff") == b"\x00\xff"
    assert key_bytes(bytearray(b"ab")) == b"ab"
    assert key_bytes(42) == b"42"
    assert key_bytes(True) == b"true"


def test_keys_spread_over_every_partition():
    counts = [0] * 6
    for i in range(6000):
        counts[partition_of(f"customer-{i}".encode(), 6)] += 1
    assert min(counts) > 800 and max(counts) < 1200
