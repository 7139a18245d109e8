"""A record taken from a topic, as the runtime's handlers see it (`Incoming`): plain
data, made once per event by the intake (streams.runtime.intake) and read by the
handlers; every field set when it is made, none computed on reading."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streams.core import positions
from streams.core.sourceheader import original_source


class Incoming:
    """A record taken from a topic, as the handlers see it (read-only by convention).

    Made once per event, every field set by `__init__` and none computed on reading,
    so that reading one enters no module: `position` (streams.core.positions), `source`
    (where it was read), `original_source()` (a copy of where it first came from: the
    given `origin`, else what its source header says: streams.core.sourceheader), `tp`."""

    __slots__ = (
        *("key", "value", "headers", "topic", "partition", "offset", "from_input", "origin", "tp"),
        *("position", "source", "original_source"),
    )

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
        self.origin = origin
        self.tp = (topic, partition)
        self.position = positions.position(offset, from_input=from_input)
        self.source = source = {"topic": topic, "partition": partition, "offset": offset}
        # A bound `dict.copy`: calling it enters no module of ours.
        self.original_source: Callable[[], dict[str, Any]] = (
            original_source(headers, source) if origin is None else dict(origin)
        ).copy

    def __repr__(self) -> str:
        return f"Incoming({self.topic}:{self.partition}@{self.offset}, key={self.key!r})"
