"""The headers an input record carries on (streams.core.sourceheader.input_headers): where it
was read, written as `json.dumps` writes it (and read back by `Incoming.original_source`),
and a replay's headers; nothing else of the record's own."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from streams.core.deadletter import REPLAY_HEADER
from streams.core.incoming import Incoming
from streams.core.sourceheader import SOURCE_HEADER, input_headers, source_header

TOPICS = st.text(st.sampled_from("abcXYZ019._-"), min_size=1, max_size=249) | st.text(max_size=20)
INTS = st.integers(min_value=0, max_value=2**63 - 1)


@given(TOPICS, INTS, INTS)
def test_the_source_header_is_what_json_dumps_writes(topic, partition, offset):
    source = {"topic": topic, "partition": partition, "offset": offset}
    assert source_header(source) == json.dumps(source).encode()
    record = Incoming(b"k", b"{}", {SOURCE_HEADER: source_header(source)}, "by-user", 0, 1)
    assert record.original_source() == source


def test_an_input_record_keeps_its_source_and_a_replays_headers_only():
    record = Incoming(b"k", b"{}", {REPLAY_HEADER: b"1", SOURCE_HEADER: b"{}", "x": b"y"}, "segment-events", 3, 7)
    headers = input_headers(record.headers, record.source)
    assert headers == {REPLAY_HEADER: b"1", SOURCE_HEADER: json.dumps(record.source).encode()}
