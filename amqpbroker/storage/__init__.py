"""Durable storage: partition logs of record batches (Kafka's layout) and ack logs.

Public API used by the broker:
    PartitionLog, Record, RecoveryReport  -- log.py, record.py, recovery.py
    AckLog                                -- acklog.py
    OffsetOutOfRange, CorruptRecordError, LogClosedError, StorageError -- errors.py
"""
from .acklog import AckLog
from .errors import CorruptRecordError, LogClosedError, OffsetOutOfRange, StorageError
from .log import PartitionLog
from .record import Record
from .recovery import RecoveryReport

__all__ = ["AckLog", "CorruptRecordError", "LogClosedError", "OffsetOutOfRange", "PartitionLog",
           "Record", "RecoveryReport", "StorageError"]
