"""A record as the runtime's handlers see it (`Incoming`), and the header that says where
a routed record first came from."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core import positions

# Where a routed record first came from (its input topic, partition and offset): set
# by intake on what it routes or re-keys, never taken from an input record.
SOURCE_HEADER = "cs-relay-source"


@dataclass(frozen=True)
class Incoming:
    """A record taken from a topic, as the handlers see it."""

    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]
    topic: str
    partition: int
    offset: int
    # An input record routed where it is (CS_RELAY_INPUT_KEYED_BY_USER): numbered apart
    # from the by-user topic's records in the state (streams.core.positions).
    from_input: bool = False
    # What SOURCE_HEADER says, when the record was made here with it (an input record
    # routed in place): `original_source` need not decode the header again.
    origin: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def position(self) -> int:
        return positions.position(self.offset, from_input=self.from_input)

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)

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
