"""`streams.core.incoming.Incoming`: plain data, every field set when it is made (reading
one enters no runtime module: bench/trackpath.py), read as the handlers read it."""

from __future__ import annotations

from streams.core import positions
from streams.core.incoming import Incoming
from streams.core.sourceheader import SOURCE_HEADER, source_header


def test_a_by_user_record_says_where_it_first_came_from_and_each_reading_is_a_copy():
    first = {"topic": "segment-events", "partition": 3, "offset": 12}
    record = Incoming(b"u1", b"{}", {SOURCE_HEADER: source_header(first)}, "by-user", 1, 7)
    assert record.position == 7 and record.tp == ("by-user", 1)
    assert record.source == {"topic": "by-user", "partition": 1, "offset": 7}
    source = record.original_source()
    assert source == first
    source["offset"] = 99  # a reader's change is its own
    assert record.original_source() == first


def test_an_input_record_routed_in_place_is_numbered_apart_and_keeps_its_given_origin():
    origin = {"topic": "segment-events", "partition": 2, "offset": 5}
    record = Incoming(b"u1", b"{}", {SOURCE_HEADER: b'{"forged": true}'}, "segment-events", 2, 5, True, origin)
    assert record.position == positions.position(5, from_input=True) != 5
    assert record.original_source() == origin  # the given origin, not the record's header


def test_a_record_without_a_readable_source_header_came_from_where_it_was_read():
    for headers in ({}, {SOURCE_HEADER: b"not json"}, {SOURCE_HEADER: b"[1, 2]"}):
        record = Incoming(None, b"{}", headers, "by-user", 0, 1)
        assert record.original_source() == {"topic": "by-user", "partition": 0, "offset": 1}


def test_any_bytes_in_the_source_header_are_a_record_from_where_it_was_read_not_an_error():
    """Intake makes an `Incoming` of every input record, outside any handler's guard: a
    producer's header of any bytes (nested past the JSON parser's recursion limit, not
    UTF-8) must not raise there, or the agent stops."""
    for raw in (b"[" * 100_000, b"\xff\xfe", b'{"a": ' * 50_000):
        record = Incoming(None, b"{}", {SOURCE_HEADER: raw}, "segment-events", 0, 1)
        assert record.original_source() == {"topic": "segment-events", "partition": 0, "offset": 1}
