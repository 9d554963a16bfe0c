"""A linear decoder of AMQP field tables and arrays, installed into pamqp.

pamqp decodes a table by handing each field value ``value[offset:]``, a copy of the rest of
the table, so a table of n fields costs O(n * size): a 128 KiB ``headers`` table or
``queue.declare`` arguments table of small fields took ~1.3 s of CPU to decode, a cheap way
for one client to stall a front-end. Here the same walk keeps the whole buffer and a
position, and hands pamqp's own scalar decoders only the bytes of one value (at most 9 bytes,
or a long string's / byte array's length prefix and contents), so every value decodes to
exactly what pamqp would give (same types, same timestamp and decimal handling, RabbitMQ's
``s`` = short int) in O(size) for the whole table.

The walk runs in C (``_fastpath.c``'s ``decode_table``: integers, booleans, void, long
strings, byte arrays, tables and arrays built there, every other type handed back to
``_value_at_py``);
the Python functions here (``_table_at_py``...) are the reference it is tested against
(``tests/property/test_fieldtable_c.py``) and what runs when the extension is not built. A
celery task's 19 headers: 11.6 µs to read in Python, see bench/RESULTS.md.

It is stricter than pamqp in one way: a value that runs past the end of its table or array is
refused (``ValueError``), where pamqp read on into the bytes after the table. A well-formed
table decodes identically (``tests/property/test_fieldtable.py`` checks both against
pamqp's own decoder).

``install()`` replaces the table and array decoders in pamqp's dispatch tables
(``decode.METHODS``, ``decode.TABLE_MAPPING``, and the module functions); the protocol
package calls it on import, so every pamqp command and content header decodes through it.
"""
from __future__ import annotations

import struct

from pamqp import decode as _pdecode

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")

# the pamqp decoders kept for scalar values: type byte -> decoder(bytes) -> (consumed, value)
_ORIGINAL_TABLE = _pdecode.field_table
_ORIGINAL_ARRAY = _pdecode.field_array
_SCALARS = {k: v for k, v in _pdecode.TABLE_MAPPING.items() if k not in (b"F", b"A")}
# integer and boolean values decoded here directly (what pamqp's decoders return for them)
_FIXED = {ord(k): struct.Struct(f) for k, f in (
    ("b", ">b"), ("B", ">B"), ("s", ">h"), ("u", ">H"), ("I", ">i"), ("i", ">I"),
    ("l", ">q"), ("L", ">q"))}
_BOOL, _VOID, _LONGSTR = ord("t"), ord("V"), ord("S")
# widest fixed-size value (decimal: 1 + 4 bytes; long long: 8): a bounded slice suffices
_FIXED_MAX = 9


def _value_at_py(buf, pos: int, end: int):
    """(value, position after it) of the field value whose type byte is at ``pos``."""
    if pos >= end:
        raise ValueError("Field value exceeds table data")
    code = buf[pos]
    pos += 1
    fixed = _FIXED.get(code)
    if fixed is not None:
        stop = pos + fixed.size
        if stop > end:
            raise ValueError("Field value exceeds table data")
        return fixed.unpack_from(buf, pos)[0], stop
    if code == _LONGSTR:
        if pos + 4 > end:
            raise ValueError("Field value exceeds table data")
        stop = pos + 4 + _U32.unpack_from(buf, pos)[0]
        if stop > end:
            raise ValueError("Field value exceeds table data")
        raw = bytes(buf[pos + 4:stop])
        try:
            return raw.decode("utf-8"), stop
        except UnicodeDecodeError:
            return raw, stop                # pamqp's long_str gives bytes then
    if code == _VOID:
        return None, pos
    if code == _BOOL:
        if pos >= end:
            raise ValueError("Field value exceeds table data")
        return bool(buf[pos]), pos + 1
    kind = bytes((code,))
    if kind == b"F":
        return _table_at_py(buf, pos, end)
    if kind == b"A":
        return _array_at_py(buf, pos, end)
    decoder = _SCALARS.get(kind)
    if decoder is None:
        raise ValueError(f"Unknown type: {kind!r}")
    if kind in (b"S", b"x"):             # u32 length, then that many bytes
        if pos + 4 > end:
            raise ValueError("Field value exceeds table data")
        stop = pos + 4 + _U32.unpack_from(buf, pos)[0]
    else:
        stop = min(pos + _FIXED_MAX, end)
    chunk = buf[pos:stop]
    consumed, value = decoder(chunk)
    if pos + consumed > end or consumed > len(chunk):
        raise ValueError("Field value exceeds table data")
    return value, pos + consumed


def _table_at_py(buf, pos: int, end: int):
    if pos + 4 > end:
        raise ValueError("Field table length exceeds available data")
    stop = pos + 4 + _U32.unpack_from(buf, pos)[0]
    if stop > end:
        raise ValueError("Field table length exceeds available data")
    pos += 4
    data = {}
    while pos < stop:
        key_length = buf[pos]
        pos += 1
        if pos + key_length > stop:
            raise ValueError("Field table key length exceeds data")
        key = bytes(buf[pos:pos + key_length]).decode("utf-8")
        pos += key_length
        data[key], pos = _value_at_py(buf, pos, stop)
    return data, stop


def _array_at_py(buf, pos: int, end: int):
    if pos + 4 > end:
        raise ValueError("Field array length exceeds available data")
    stop = pos + 4 + _U32.unpack_from(buf, pos)[0]
    if stop > end:
        raise ValueError("Field array length exceeds available data")
    pos += 4
    data = []
    while pos < stop:
        value, pos = _value_at_py(buf, pos, stop)
        data.append(value)
    return data, stop


try:                # the same walk in C (``_fastpath.c``): ~10x faster on clients' headers
    from ._fastpath import decode_array as _decode_array_c, decode_table as _decode_table_c

    def _table_at(buf, pos: int, end: int):
        return _decode_table_c(buf, pos, end, _value_at_py)

    def _array_at(buf, pos: int, end: int):
        return _decode_array_c(buf, pos, end, _value_at_py)
except ImportError:  # not built: the Python reference does the work
    _table_at, _array_at = _table_at_py, _array_at_py


def field_table(value: bytes) -> tuple[int, dict]:
    """pamqp's ``decode.field_table`` interface: (bytes consumed, the table)."""
    try:
        data, stop = _table_at(value, 0, len(value))
    except (struct.error, TypeError, IndexError, UnicodeDecodeError) as err:
        raise ValueError("Could not unpack data") from err
    return stop, data


def field_array(value: bytes) -> tuple[int, list]:
    """pamqp's ``decode.field_array`` interface: (bytes consumed, the array)."""
    try:
        data, stop = _array_at(value, 0, len(value))
    except (struct.error, TypeError, IndexError, UnicodeDecodeError) as err:
        raise ValueError("Could not unpack data") from err
    return stop, data


def original_decoders():
    """pamqp's own table and array decoders (for the equivalence tests)."""
    return _ORIGINAL_TABLE, _ORIGINAL_ARRAY


def install() -> None:
    _pdecode.field_table = field_table
    _pdecode.field_array = field_array
    _pdecode.METHODS["table"] = field_table
    _pdecode.METHODS["array"] = field_array
    _pdecode.TABLE_MAPPING[b"F"] = field_table
    _pdecode.TABLE_MAPPING[b"A"] = field_array
