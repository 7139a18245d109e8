"""Packed dedupe rows: a partition's new dedupe entries in one changelog record.

Every routed messageId is remembered in the `seen` table (streams.core.dedupe) under
its own row key, so a lookup is one point read. Written one row per event, each was a
RocksDB put and a changelog record of its own (measured with `python -m bench.faustcost`,
table mode: about 270 us of the 1.36 ms of CPU a track took). Now:

* the *index rows* keep their keys (`dedupe.row_key`) and are written to the worker's
  local store only, without a changelog record (`index_row`: offset, time, and a mark
  saying that the row lives in a packed row);
* the entries of the events a partition handled in the last few milliseconds (up to
  `MAX_PACK_ENTRIES`, and below `MAX_PACK_BYTES` encoded) go to the changelog as one
  *packed row*, keyed `pack_key(partition, serial)`, never the key of another row.
  Recovery and standbys expand each packed row back into its index rows (`expand`;
  streams.runtime.seentable), so after a restore a lookup is again one point read;
  the store keeps only a summary of the packed row itself (`summary_of`).

Index rows written by older workers (`dedupe.row`, two fields: each has its own
changelog record) and their per-user records (`dedupe.Seen`) are read as before.

A packed row's bound: `Packer` counts the JSON encoding of every entry as Python's
`json.dumps` makes it with its defaults (ASCII escapes and `", "` separators: at least
as long as any JSON encoder writes it), and takes no entry that would carry the row past
`MAX_PACK_BYTES` (64 KB, far below the changelog topics' 1 MiB max.message.bytes). An
entry within the id limits (streams.core.idlimits) is at most about 2.8 KB, so a
packed row holds at least 20 of the worst. An entry larger than the bound alone (only a
replay identity far beyond any dead-letter topic's name) goes in a row of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.core.dedupe import ROW_PREFIX
from streams.core.versions import check_version

PACK_PREFIX = "\x01"  # after ROW_PREFIX: a partition's sweep reads the index rows first
PACK_VERSION = 1
MAX_PACK_BYTES = 64 * 1024
MAX_PACK_ENTRIES = 500
PACKED = 1  # third field of an index row: it lives in a packed row, not in a record of its own
_EMPTY = len(json.dumps({"v": PACK_VERSION, "e": []}))
_SEPARATOR = len(", ")


def pack_key(partition: int, serial: str) -> str:
    """A packed row of `partition`. `serial` names it apart from every other row ever
    written (a worker's token and its count): the changelog is compacted by key, and a
    row written again under the key of one in Kafka (a redone event opening it) would
    take that row's other entries with it."""
    return PACK_PREFIX + json.dumps([partition, serial], separators=(",", ":"))


def is_pack_key(key: str) -> bool:
    return key.startswith(PACK_PREFIX)


def partition_of_pack(key: str) -> int:
    return int(json.loads(key[len(PACK_PREFIX) :])[0])


def index_row(offset: int, now: float) -> list[float | int]:
    """The local row of one entry of a packed row: read as `dedupe.row` is."""
    return [offset, now, PACKED]


def is_packed_index(value: Any) -> bool:
    """Whether an index row lives in a packed row (no changelog record of its own)."""
    return isinstance(value, list) and len(value) > 2 and value[2] == PACKED


def encoded_size(value: Any) -> int:
    """The bytes `value` takes as the bound counts them."""
    return len(json.dumps(value).encode("utf-8"))


class Packer:
    """The entries of one packed row, as they are added, with its encoded size."""

    def __init__(self, max_bytes: int = MAX_PACK_BYTES, max_entries: int = MAX_PACK_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.entries: list[list[Any]] = []
        self.size = _EMPTY
        self.newest = 0.0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.max_entries

    def fits(self, row_key: str, offset: int = (1 << 63) - 1, now: float = 9_999_999_999.999) -> bool:
        """Whether the entry of `row_key` keeps the row within its bytes (counted with
        the largest offset and time unless given); an empty packer takes any entry."""
        return not self.entries or self.size + _SEPARATOR + _entry_size(_entry(row_key, offset, now)) <= self.max_bytes

    def add(self, row_key: str, offset: int, now: float) -> None:
        self.try_add(row_key, offset, now, force=True)

    def try_add(self, row_key: str, offset: int, now: float, *, force: bool = False) -> bool:
        """Add the entry unless it would take a row that has entries past its bytes."""
        entry = _entry(row_key, offset, now)
        size = _entry_size(entry) + (_SEPARATOR if self.entries else 0)
        if self.entries and self.size + size > self.max_bytes and not force:
            return False
        self.size += size
        self.entries.append(entry)
        self.newest = max(self.newest, now)
        return True

    def value(self) -> dict[str, Any]:
        return {"v": PACK_VERSION, "e": self.entries}

    def summary(self) -> dict[str, Any]:
        """What the worker's own store keeps of the row (`summary_of`)."""
        return {"v": PACK_VERSION, "newest": self.newest, "n": len(self.entries)}


def _entry(row_key: str, offset: int, now: float) -> list[Any]:
    return [*json.loads(row_key[len(ROW_PREFIX) :]), offset, now]  # user, kind, id, offset, time


def _entry_size(entry: list[Any]) -> int:
    return len(json.dumps(entry).encode("utf-8"))


def expand(value: Mapping[str, Any]) -> list[tuple[str, list[float | int]]]:
    """The index rows of a packed row, in the order they were added."""
    check_version(value, "packed dedupe", PACK_VERSION)
    return [
        (ROW_PREFIX + json.dumps([user, kind, ident], separators=(",", ":")), index_row(int(offset), float(now)))
        for user, kind, ident, offset, now in value.get("e") or ()
    ]


def summary_of(value: Mapping[str, Any]) -> dict[str, Any]:
    """What the store keeps of a packed row: not its entries (each is an index row of
    its own there), only what the sweep needs to write its tombstone in time."""
    check_version(value, "packed dedupe", PACK_VERSION)
    entries = value.get("e") or ()
    return {"v": PACK_VERSION, "newest": max((float(e[4]) for e in entries), default=0.0), "n": len(entries)}


def pack_expired(value: Mapping[str, Any], now: float, window: float) -> bool:
    """Whether every entry of a packed row (or of the row a summary stands for) is past
    the dedupe window."""
    if "newest" in value:
        return now - float(value["newest"]) > window
    return all(now - float(entry[4]) > window for entry in value.get("e") or ())
