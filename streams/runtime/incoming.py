"""A record as the runtime's handlers see it (`Incoming`), and the header that says where
a routed record first came from."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.core import positions

# Where a routed record first came from (its input topic, partition and offset): set
# by intake on what it routes or re-keys, never taken from an input record.
SOURCE_HEADER = "cs-relay-source"


class Incoming:
    """A record taken from a topic, as the handlers see it (read-only by convention).

    Made once per event: a plain class with slots, its fields set by one `__init__` (a
    frozen dataclass set each through `object.__setattr__`), and its partition's `tp`
    kept as a field, read twice per event by the acknowledgements."""

    __slots__ = ("key", "value", "headers", "topic", "partition", "offset", "from_input", "origin", "tp")

    def __init__(
        self,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes],
        topic: str,
        partition: int,
        offset: int,
        from_input: bool = False,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.headers = headers
        self.topic = topic
        self.partition = partition
        self.offset = offset
        # An input record routed where it is (CS_RELAY_INPUT_KEYED_BY_USER): numbered
        # apart from the by-user topic's records in the state (streams.core.positions).
        self.from_input = from_input
        # What SOURCE_HEADER says, when the record was made here with it (an input
        # record routed in place): `original_source` need not decode the header again.
        self.origin = origin
        self.tp = (topic, partition)

    def __repr__(self) -> str:
        return f"Incoming({self.topic}:{self.partition}@{self.offset}, key={self.key!r})"

    @property
    def position(self) -> int:
        return positions.position(self.offset, from_input=self.from_input)

    @property
    def source(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def original_source(self) -> dict[str, Any]:
        """Where the event first came from (the input topic), as intake recorded it."""
        if self.origin is not None:
            return dict(self.origin)
        try:
            return json.loads(self.headers[SOURCE_HEADER])
        except (KeyError, ValueError):
            return self.source
