"""New dedupe entries, written as packed rows: one changelog record per partition per
PACK_LINGER instead of one per event (streams.core.seenpack).

`SeenPacks.remember(partition, row_key, offset, now)` is called by the handler of an
event whose messageId is new: the entry's index row goes to the local store at once
(the next event's lookup finds it), and the entry joins the partition's open packed
row. The event's acknowledgement waits for that row's changelog write, as it waits
for any table write: the row's `written` future joins the batch's changelog writes
(appended to `ChangelogWrites.collecting`), completed once Kafka has the packed row
(the future of the table's own send: `KeptRows.write_packed`), or failed with it (the
worker then stops, `Runtime.failed_for_good`).

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

What a track does with them is in the state door (`streams.runtime.rows.OpenPacks`),
which it enters anyway: `remember`, the opening of a partition's row, and its write
(`flush`, by `_lingering` when the linger timer wakes it, or when full), the events'
`written` settled with the row's changelog write. What is here is cold: the rows'
making (`SeenPacks`), the revocation's `forget`, the worker's `stop`, `open_entries`
(tests), and the sweep's row deletions (`delete_local`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from streams.core.seenpack import MAX_PACK_BYTES, MAX_PACK_ENTRIES
from streams.runtime.acks import ChangelogWrites
from streams.runtime.rows import OpenPacks
from streams.runtime.seentable import local_of

# Seconds an open packed row waits for more entries. A packed row costs about as much
# CPU as the record per event it replaces (Faust's producer path, ~150-300 us), so it
# pays by its entries: measured with `python -m bench.faustcost --modes packed` (8
# partitions, one worker draining), 5 ms packed 3 entries per row (226 us per event),
# 20 ms 14 (144 us), 50 ms 34 (132 us); at the rates of `make bench` b (about 90
# tracks/s per partition) 50 ms packs 4-5. Events wait that much longer for their
# acknowledgement (their commit), not for their deliveries.
PACK_LINGER = 0.05


class SeenPacks(OpenPacks):
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
        self.local = local_of(table)  # the row cache itself in the worker
        self.changelog = changelog
        self.linger = linger
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._open = {}
        self._timer = None  # wakes `_lingering`, which writes every open row
        self._wake = None
        self._lingerer = None
        self._token = uuid.uuid4().hex[:12]  # with the count, each packed row's key is its own
        self._count = 0
        self.written = 0  # packed rows written, for tests and the profile

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the open rows of revoked partitions (their events are redone elsewhere)."""
        for partition in partitions:
            pack = self._open.pop(partition, None)
            if pack is not None:
                pack.written.cancel()
        if not self._open and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop(self) -> None:
        """The worker stops: the rows open now are not written (their events are not
        acknowledged); the writer coroutine ends (a row opened after this would start
        another: the stop opens none)."""
        if self._lingerer is not None:
            self._lingerer.cancel()
            self._lingerer = None
        self._wake = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def open_entries(self, partition: int) -> int:
        pack = self._open.get(partition)
        return len(pack.packer) if pack is not None else 0


def delete_local(table: Any, partition: int, key: str) -> None:
    """A row out of the store of `partition` alone (no changelog record): the sweep's."""
    local_of(table).delete_local(partition, key)
