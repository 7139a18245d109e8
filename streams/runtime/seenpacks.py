"""New dedupe entries, written as packed rows: one changelog record per partition per
PACK_LINGER instead of one per event (streams.core.seenpack).

`SeenPacks.remember(partition, row_key, offset, now)` is called by the handler of an
event whose messageId is new: the entry's index row goes to the local store at once
(the next event's lookup finds it), and the entry joins the partition's open packed
row. The event's acknowledgement waits for that row's changelog write, as
it waits for any table write (`ChangelogWrites.collected`): the row's `written` future
is among the event's work, completed once Kafka has the packed row (or failed with
it: the worker then stops, `Runtime.failed_for_good`).

The open rows are written together when `linger` seconds (PACK_LINGER) have passed
since the first entry of any of them (one timer for all partitions: their records
reach the producer at once and go out in one produce request, rather than one request
per partition at times of their own), and a row on its own when it is full
(`MAX_PACK_ENTRIES`, or the next entry would take it past `MAX_PACK_BYTES`). No row
waits longer than `linger` after its first entry. A rebalance that takes the partition
drops its open row: its events are never acknowledged here, and whoever reads the
partition next handles them again.

Redo: an event handled again after a crash finds its index row if the row is in the
store (restored from a packed row that reached Kafka, or left by this worker's store):
the same record again (REDELIVERED) is handled again, and its entry joins the open row
again (with its first time, so it expires as it would have), so that an entry whose
packed row never reached Kafka becomes durable now. Another record with the messageId
is a duplicate. Without the index row the event is new, handled again: at least once.

Tables without `put_local` (plain dicts in unit tests) take every row as an item.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.core import seenpack
from streams.core.seenpack import MAX_PACK_BYTES, MAX_PACK_ENTRIES, Packer
from streams.runtime.acks import ChangelogWrites

# Seconds an open packed row waits for more entries. A packed row costs about as much
# CPU as the record per event it replaces (Faust's producer path, ~150-300 us), so it
# pays by its entries: measured with `python -m bench.faustcost --modes packed` (8
# partitions, one worker draining), 5 ms packed 3 entries per row (226 us per event),
# 20 ms 14 (144 us), 50 ms 34 (132 us); at the rates of `make bench` b (about 90
# tracks/s per partition) 50 ms packs 4-5. Events wait that much longer for their
# acknowledgement (their commit), not for their deliveries.
PACK_LINGER = 0.05


@dataclass
class _Open:
    key: str
    packer: Packer
    written: asyncio.Future[Any]


class SeenPacks:
    def __init__(
        self,
        table: Any,
        changelog: ChangelogWrites,
        *,
        linger: float = PACK_LINGER,
        max_entries: int = MAX_PACK_ENTRIES,
        max_bytes: int = MAX_PACK_BYTES,
    ) -> None:
        self.table = table
        self.changelog = changelog
        self.linger = linger
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._open: dict[int, _Open] = {}
        self._timer: asyncio.Handle | None = None  # writes every open row (`flush_all`)
        self._token = uuid.uuid4().hex[:12]  # with the count, each packed row's key is its own
        self._count = 0
        self.written = 0  # packed rows written, for tests and the profile

    def remember(self, partition: int, row_key: str, offset: int, now: float) -> None:
        """Remember a dedupe entry of the event being handled (in `partition`); the
        event's acknowledgement waits for its packed row."""
        put_local(self.table, partition, row_key, seenpack.index_row(offset, now))
        pack = self._open.get(partition)
        if pack is not None and not pack.packer.try_add(row_key, offset, now):
            self.flush(partition)  # full by its bytes: the entry opens the next row
            pack = None
        if pack is None:
            pack = self._opened(partition)
            pack.packer.add(row_key, offset, now)
        self.changelog.collected().append(pack.written)
        if pack.packer.full:
            self.flush(partition)

    def _opened(self, partition: int) -> _Open:
        loop = asyncio.get_running_loop()
        packer = Packer(max_bytes=self.max_bytes, max_entries=self.max_entries)
        self._count += 1
        pack = _Open(seenpack.pack_key(partition, f"{self._token}.{self._count}"), packer, loop.create_future())
        if self._timer is None:
            if self.linger > 0:
                self._timer = loop.call_later(self.linger, self._lingered)
            else:
                self._timer = loop.call_soon(self._lingered)
        self._open[partition] = pack
        return pack

    def _lingered(self) -> None:
        self._timer = None
        self.flush_all()

    def _none_open(self) -> None:
        if not self._open and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self, partition: int) -> None:
        """Write the partition's open packed row, if any."""
        pack = self._open.pop(partition, None)
        if pack is None:
            return
        self._none_open()
        try:
            with self.changelog as writes:
                write_packed(self.table, partition, pack.key, pack.packer.value())
        except Exception as exc:  # noqa: BLE001 - the producer refused it: the events' work failed
            pack.written.set_exception(exc)
            return
        self.written += 1
        _complete_with(pack.written, writes)

    def flush_all(self) -> None:
        """Write every partition's open packed row (the shared linger timer's work)."""
        for partition in list(self._open):
            self.flush(partition)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the open rows of revoked partitions (their events are redone elsewhere)."""
        for partition in partitions:
            pack = self._open.pop(partition, None)
            if pack is not None:
                pack.written.cancel()
        self._none_open()

    def open_entries(self, partition: int) -> int:
        pack = self._open.get(partition)
        return len(pack.packer) if pack is not None else 0


def _complete_with(written: asyncio.Future[Any], writes: list[Any]) -> None:
    if not writes:
        written.set_result(None)
        return
    gathered = asyncio.gather(*writes)

    def done(f: asyncio.Future[Any]) -> None:
        if written.done():
            return
        if f.cancelled():
            written.cancel()
        elif f.exception() is not None:
            written.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            written.set_result(None)

    gathered.add_done_callback(done)


def put_local(table: Any, partition: int, key: str, value: Any) -> None:
    """A row to the store of `partition` alone (no changelog record)."""
    local_of(table).put_local(partition, key, value)


def get_local(table: Any, partition: int, key: str) -> Any:
    """A row of the store of `partition` (the table's `get` where it has no `get_local`)."""
    return local_of(table).get_local(partition, key)


def delete_local(table: Any, partition: int, key: str) -> None:
    """A row out of the store of `partition` alone (no changelog record)."""
    local_of(table).delete_local(partition, key)


def write_packed(table: Any, partition: int, key: str, value: Any) -> None:
    """A packed row to the store and the changelog of `partition`."""
    local_of(table).write_packed(partition, key, value)


def local_of(table: Any) -> Any:
    """What reads and writes `table`'s rows by partition: the table itself where it
    can (`SeenTable`, the row cache over one), else `ByItem` over it (made per call:
    unit tests' tables). The row cache
    takes it once, at its start, and calls it directly."""
    return table if all(hasattr(table, name) for name in _LOCAL) else ByItem(table)


_LOCAL = ("get_local", "put_local", "delete_local", "write_packed")


class ByItem:
    """A table without partitions of its own (a plain dict in unit tests, a Faust table
    other than the seen table): every row an item, whatever the partition, except
    through those of the four methods the table has."""

    def __init__(self, table: Any) -> None:
        self.table = table
        for name in _LOCAL:
            if hasattr(table, name):
                setattr(self, name, getattr(table, name))

    def get_local(self, partition: int, key: str) -> Any:
        return self.table.get(key)

    def put_local(self, partition: int, key: str, value: Any) -> None:
        self.table[key] = value

    def delete_local(self, partition: int, key: str) -> None:
        self.table.pop(key, None)

    def write_packed(self, partition: int, key: str, value: Any) -> None:
        self.table[key] = value
