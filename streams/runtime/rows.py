"""The rows of the users of this worker's partitions (`Rows`, the runtime's `rows`): a
user's record, its pending record (an index row and a payload row per waiting event,
`streams.runtime.pendingstore`) and its legacy dedupe row, read decoded once per version
of the row (`streams.runtime.rowcache`); writes of a pending record keep the counts of
`/status` (`pending_counts`, per partition) and the index of parked users
(`streams.runtime.parking`) up to date.

`assigned(partitions)`: recovery may have replaced rows behind the row caches (they are
emptied), and the counts of partitions no longer ours go (the new ones are counted by
the retry rescan). A revocation changes nothing here: the assignment that ends the
rebalance does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from streams.core.dedupe import Seen
from streams.core.pending import Pending
from streams.core.pendingcounts import PendingCounts
from streams.core.state import UserState
from streams.runtime.pendingstore import PendingStore
from streams.runtime.rowcache import CachedRows, decoded

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
