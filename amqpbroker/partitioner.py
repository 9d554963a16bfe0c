"""Kafka's default partitioner: which partition of a topic a message key goes to.

``partition_of(key, n) = (murmur2(key) & 0x7fffffff) % n``, with ``murmur2`` exactly as
Kafka's ``org.apache.kafka.common.utils.Utils.murmur2`` (MurmurHash2, seed ``0x9747b28c``,
32-bit, the key's bytes read as little-endian 4-byte words), so a key lands in the partition a
Kafka producer would put it in for the same partition count. A text key is hashed as its UTF-8
bytes (Kafka's ``StringSerializer``).

No I/O; imported by the front-end's ``x-partitioned`` exchange (``frontend/exchange.py``).
"""
from __future__ import annotations

SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: a signed 32-bit int, as Java returns it."""
    length = len(data)
    h = (SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: the sign bit cleared (not ``abs``)."""
    return n & 0x7FFFFFFF


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (Kafka's ``BuiltInPartitioner
    .partitionForKey``)."""
    return to_positive(murmur2(key)) % partitions


def key_bytes(value) -> bytes:
    """A partition key as the bytes hashed: text as UTF-8, bytes as they are, anything else
    (a number in a header) as its text."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()
