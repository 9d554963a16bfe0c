"""The stream argument parsers of queue_args: x-stream-offset specs (RabbitMQ's
parse_offset_arg), x-max-age intervals (check_max_age), consumer filters."""
from __future__ import annotations

import datetime
import time

import pytest

from amqpbroker import errors
from amqpbroker.queue_args import (StreamFilter, check_stream_consume, parse_max_age,
                                   parse_stream_offset)

NOW = 1_700_000_000_000


@pytest.mark.parametrize("value, spec", [
    (None, ("next",)), ("first", ("first",)), ("last", ("last",)), ("next", ("next",)),
    (b"first", ("first",)), (0, ("offset", 0)), (42, ("offset", 42)), (-5, ("offset", -5)),
    (2**62, ("offset", 2**62)),
    ("30m", ("timestamp", NOW - 30 * 60_000)), ("2h", ("timestamp", NOW - 2 * 3_600_000)),
    ("1D", ("timestamp", NOW - 86_400_000)), ("10s", ("timestamp", NOW - 10_000)),
    ("1M", ("timestamp", NOW - 30 * 86_400_000)), ("1Y", ("timestamp", NOW - 365 * 86_400_000)),
])
def test_offset_specs(value, spec):
    assert parse_stream_offset(value, NOW) == spec


def test_timestamps_are_seconds_as_amqp_sends_them():
    aware = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert parse_stream_offset(aware, NOW) == ("timestamp", int(aware.timestamp()) * 1000)
    naive = datetime.datetime(2024, 1, 2, 3, 4, 5)           # pamqp's 'T' is UTC
    assert parse_stream_offset(naive, NOW) == ("timestamp", int(aware.timestamp()) * 1000)
    st = time.gmtime(1_700_000_000)
    assert parse_stream_offset(st, NOW) == ("timestamp", 1_700_000_000_000)


@pytest.mark.parametrize("value, reason", [
    ("bogus", '{invalid_stream_offset_arg,{longstr,<<"bogus">>}}'),
    ("0m", '{invalid_stream_offset_arg,{longstr,<<"0m">>}}'),
    ("5", '{invalid_stream_offset_arg,{longstr,<<"5">>}}'),
    ("5 m", '{invalid_stream_offset_arg,{longstr,<<"5 m">>}}'),
    ("", '{invalid_stream_offset_arg,{longstr,<<>>}}'),
    (True, "{invalid_stream_offset_arg,{bool,true}}"),
    (1.5, "{invalid_stream_offset_arg,{double,1.5}}"),
    ({"a": 1}, "{invalid_stream_offset_arg,{table,{'a': 1}}}"),
])
def test_invalid_offset_specs(value, reason):
    with pytest.raises(ValueError) as info:
        parse_stream_offset(value, NOW)
    assert str(info.value) == reason


@pytest.mark.parametrize("text, ms", [
    ("7D", 7 * 86_400_000), ("1s", 1000), ("15m", 900_000), ("007h", 7 * 3_600_000),
    ("0D", None), ("D", None), ("7d", None), ("7", None), ("-1s", None), ("1.5h", None),
    (7, None), (None, None),
])
def test_max_age(text, ms):
    assert parse_max_age(text) == ms


def test_filters():
    assert StreamFilter.from_arguments({}) is None
    f = StreamFilter.from_arguments({"x-stream-filter": "red"})
    assert f.accepts("red") and f.accepts(b"red") and not f.accepts("blue")
    assert not f.accepts(None)                              # match-unfiltered defaults false
    f = StreamFilter.from_arguments({"x-stream-filter": ["red", "blue", 5],
                                     "x-stream-match-unfiltered": True})
    assert f.accepts("red") and f.accepts("blue") and not f.accepts("green")
    assert f.accepts(None)
    # not a string or a list: no filter at all (RabbitMQ's filter_spec ignores it)
    assert StreamFilter.from_arguments({"x-stream-filter": 5}) is None


def _consume(args, **kw):
    opts = dict(prefetch=10, no_ack=False, global_qos=False, now_ms=NOW)
    opts.update(kw)
    check_stream_consume("s", "/", args, **opts)


def test_consume_checks_in_rabbitmq_order():
    _consume({"x-stream-offset": "first", "x-stream-filter": "a"})
    with pytest.raises(errors.PreconditionFailed) as info:       # arguments before prefetch
        _consume({"x-stream-offset": "bogus"}, prefetch=0, no_ack=True)
    assert info.value.text == ("invalid arg 'x-stream-offset' for queue 's' in vhost '/': "
                               '{invalid_stream_offset_arg,{longstr,<<"bogus">>}}')
    with pytest.raises(errors.PreconditionFailed) as info:
        _consume({}, prefetch=0, no_ack=True)
    assert info.value.text == "consumer prefetch count is not set for 'queue 's' in vhost '/''"
    with pytest.raises(errors.NotImplemented_) as info:
        _consume({}, no_ack=True, global_qos=True)
    assert "automatic acknowledgement" in info.value.text
    with pytest.raises(errors.NotImplemented_) as info:
        _consume({}, global_qos=True)
    assert info.value.text == "queue 's' in vhost '/' does not support global qos"
