"""What `cs-relay backfill` has done for one destination in one input partition: the
input offsets it handled (sent, skipped by the rules, or dead-lettered), as sorted,
disjoint ranges. A second backfill over the same span finds every offset in them and
sends nothing twice. Kept in the compacted `{app_id}-backfill` topic, one record per
destination, input topic and partition (`key`); pure: no I/O here.

A backfill reads a span in offset order and records each batch once it is handled, so
the ranges of one span merge into one; separate spans leave gaps between them. At most
`MAX_RANGES` ranges (about 30 bytes each in JSON, far below any topic's record limit):
a backfill that would leave more is refused before it starts (`RecordFull`)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass

VERSION = 1
MAX_RANGES = 2_000
MAX_BYTES = 128 * 1024  # MAX_RANGES ranges of two offsets below 2^63: about 80 KB at most


class RecordFull(ValueError):
    """The record would hold more than MAX_RANGES separate spans."""


def key(destination: str, topic: str, partition: int) -> bytes:
    return f"{destination}\x00{topic}\x00{partition}".encode()


def parse_key(raw: bytes) -> tuple[str, str, int] | None:
    parts = raw.decode("utf-8", "replace").split("\x00")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


@dataclass(frozen=True)
class Done:
    """Half-open ranges [start, end) of handled offsets: sorted, disjoint, not touching."""

    ranges: tuple[tuple[int, int], ...] = ()

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self.ranges, (offset, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= offset < self.ranges[i][1]

    def add(self, start: int, end: int) -> Done:
        """With [start, end) handled too; raises `RecordFull` past MAX_RANGES."""
        if end <= start:
            return self
        merged = _merge([*self.ranges, (start, end)])
        if len(merged) > MAX_RANGES:
            raise RecordFull(
                f"the backfill record would hold more than {MAX_RANGES} separate spans; "
                "backfill a span that joins the earlier ones"
            )
        return Done(merged)

    def gaps(self, start: int, end: int) -> int:
        """How many offsets of [start, end) are not handled yet."""
        covered = sum(max(0, min(e, end) - max(s, start)) for s, e in self.ranges)
        return max(0, end - start) - covered

    def to_bytes(self) -> bytes:
        return json.dumps({"v": VERSION, "ranges": [list(r) for r in self.ranges]}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Done:
        if not raw:
            return cls()
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError(f"a backfill record of an unknown version: {str(data)[:80]}")
        return cls(_merge((int(s), int(e)) for s, e in data["ranges"]))


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)
