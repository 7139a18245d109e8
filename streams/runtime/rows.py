"""The rows of the users of this worker's partitions (`Rows`, the runtime's `rows`): a
user's record, its pending record (an index row and a payload row per waiting event,
`PendingStore`) and its legacy dedupe row, read decoded once per version
of the row (`streams.runtime.rowcache`); writes of a pending record keep the counts of
`/status` (`pending_counts`, per partition) and the index of parked users
(`streams.runtime.parking`) up to date.

`assigned(partitions)`: recovery may have replaced rows behind the row caches (they are
emptied), and the counts of partitions no longer ours go (the new ones are counted by
the retry rescan). A revocation changes nothing here: the assignment that ends the
rebalance does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

from streams.core import pendingrows
from streams.core.dedupe import Seen
from streams.core.pending import Pending
from streams.core.pendingcounts import PendingCounts
from streams.core.state import UserState
from streams.runtime.rowcache import CachedRows, decoded

log = logging.getLogger("cs_relay")

Table = MutableMapping[str, Any]


def _read_user(data: Any) -> UserState | None:
    return UserState.from_dict(data) if data else None


class Rows:
    def __init__(
        self,
        *,
        users: Table,
        pending: Table,
        payloads: Table,
        seen: Table,
        partition_of: Callable[[str], int],
        index_retry: Callable[[str, Pending], None],
    ) -> None:
        self.users = users
        self.seen_rows = seen
        self.pendings = PendingStore(pending, payloads)
        self.partition_of = partition_of
        self.index_retry = index_retry  # told of every pending record written (streams.runtime.parking)
        self.pending_counts = PendingCounts()  # events waiting, per destination and state, for /status

    def user(self, key: str) -> UserState | None:
        return decoded(self.users, key, _read_user)

    def pending(self, key: str) -> Pending:
        return self.pendings.read(key)

    def seen(self, key: str) -> Seen:
        return decoded(self.seen_rows, key, Seen.from_dict)

    def store_pending(self, key: str, pending: Pending) -> None:
        self.index_retry(key, pending)
        before = self.pendings.read(key)
        self.pending_counts.written(self.partition_of(key), key, before, pending)
        self.pendings.write(key, before, pending)

    def assigned(self, partitions: Iterable[int]) -> None:
        owned = set(partitions)
        for table in (self.users, self.pendings.index, self.seen_rows):
            if isinstance(table, CachedRows):
                table.clear()  # recovery may have replaced rows behind the cache
        self.pending_counts.assigned(owned)  # the new ones counted by the rescan


class PendingStore:
    """Where a user's pending record lives: its index row and its events' payload rows
    (`streams.core.pendingrows` says what each holds and why they are apart).

    `read(key)` joins them into the `Pending` the step works on, kept decoded with the
    index row (`CachedRows.decoded`) so that a user's events read it once; `write(key,
    before, after)` writes the payload rows of new events, deletes those of events gone,
    then the index row (or deletes it, when nothing waits). Every one of these is a
    changelog write of the event being processed, so its offset is committed only once
    all of them are durable (`streams.runtime.acks`). `get(key)` and `values()`
    serve the admin API: the joined record whole, and the index rows (enough to count
    what waits).
    """

    def __init__(self, index: Table, payloads: Table) -> None:
        self.index = index
        self.payloads = payloads
        self.missing = 0  # payload rows found missing (see pendingrows.read)

    def read(self, key: str) -> Pending:
        return decoded(self.index, key, lambda row: self._join(key, row))

    def _join(self, key: str, row: Any) -> Pending:
        pending, missing = pendingrows.read(
            row, lambda dest, seq: self.payloads.get(pendingrows.payload_key(key, dest, seq))
        )
        if missing:
            self.missing += len(missing)
            log.error(
                "user %r: %d waiting events have no payload row (%s); left out until their record is processed again",
                key,
                len(missing),
                ", ".join(f"{dest}#{seq}" for dest, seq in missing[:5]),
            )
        return pending

    def write(self, key: str, before: Pending, after: Pending) -> None:
        stored = self.index.get(key)
        if stored is not None and stored.get("v", 1) < pendingrows.INDEX_VERSION:
            # A whole record of an older worker: none of its events has a row yet.
            before = Pending()
        put, gone = pendingrows.changes(before, after)
        for (dest, seq), row in put.items():
            self.payloads[pendingrows.payload_key(key, dest, seq)] = row
        for dest, seq in gone:
            payload = pendingrows.payload_key(key, dest, seq)
            if self.payloads.get(payload) is not None:
                del self.payloads[payload]
        if after.is_empty():
            if self.index.get(key) is not None:
                del self.index[key]
            return
        row = pendingrows.index_row(after)
        if isinstance(self.index, CachedRows):
            self.index.put(key, row, after)
        else:
            self.index[key] = row

    # ------------------------------------------------------------------ admin API

    @property
    def name(self) -> str:
        """The index table's name: the admin API finds a user's worker by its partitions."""
        return str(getattr(self.index, "name", "pending"))

    def get(self, key: str, default: Any = None) -> dict[str, Any] | None:
        if self.index.get(key) is None:
            return default
        return self.read(key).to_dict()

    def values(self) -> Iterator[Any]:
        return iter(self.index.values())
