"""Errors the storage layer raises to its callers."""


class StorageError(Exception):
    """Base class of storage errors."""


class OffsetOutOfRange(StorageError, LookupError):
    """The offset is below the partition's start offset (deleted by retention or acks), or
    read_one() asked for an offset that has no readable record."""


class CorruptRecordError(StorageError):
    """A batch failed its CRC or disagreed with the index while being read (bit rot inside a
    closed segment, which recovery does not scan in full)."""


class LogClosedError(StorageError):
    """The PartitionLog or AckLog was used after close()."""
