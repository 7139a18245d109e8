"""The headers a record of the input topic carries on once re-keyed or routed in place:
where it was read (SOURCE_HEADER) and those of a replay (streams.core.deadletter).
Only those: an input record's own cannot pose as a control record or claim another
source. Pure: the runtime's intake (streams.runtime.intake) calls these per record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from streams.core.deadletter import REPLAY_DESTINATION_HEADER, REPLAY_HEADER, REPLAY_OF_HEADER

# Where a routed record first came from (its input topic, partition and offset): set
# by intake on what it routes or re-keys, never taken from an input record.
SOURCE_HEADER = "cs-relay-source"
REPLAY_HEADERS = (REPLAY_HEADER, REPLAY_DESTINATION_HEADER, REPLAY_OF_HEADER)


def input_headers(headers: Mapping[str, bytes], source: dict[str, Any]) -> dict[str, bytes]:
    """What an input record with `headers`, read at `source`, carries on."""
    carried = {k: v for k, v in headers.items() if k in REPLAY_HEADERS}
    carried[SOURCE_HEADER] = source_header(source)
    return carried


def source_header(source: dict[str, Any]) -> bytes:
    """`json.dumps(source).encode()`, written directly (a quarter of the time): a topic
    name is a JSON string as `json.dumps` writes it, partition and offset are ints."""
    topic, partition, offset = source["topic"], source["partition"], source["offset"]
    if type(topic) is not str or type(partition) is not int or type(offset) is not int:
        return json.dumps(source).encode()
    return f'{{"topic": {encode_basestring_ascii(topic)}, "partition": {partition}, "offset": {offset}}}'.encode()


def original_source(headers: Mapping[str, bytes], source: dict[str, Any]) -> dict[str, Any]:
    """Where a record read at `source` first came from: what its SOURCE_HEADER says, if
    it has one that decodes to an object, else `source`."""
    raw = headers.get(SOURCE_HEADER)
    if raw is None:
        return source
    try:
        origin = json.loads(raw)
    except (ValueError, RecursionError):  # any bytes a producer put there (not UTF-8, nested too deep)
        return source
    return origin if isinstance(origin, dict) else source
