"""Where a user's pending record lives (`PendingStore`, the `pendings` of the state door
`streams.runtime.rows.Rows`): its index row and its events' payload rows
(`streams.core.pendingrows` says what each holds and why they are apart).

`join(key, row)` makes the `Pending` the step works on from the index row and the
payload rows it names; the door keeps it decoded with the index row (`Rows.pending`), so
a user's events join it once per version of the row. `write(key, before, after)` writes
the payload rows of new events, deletes those of events gone, then the index row (or
deletes it, when nothing waits). Every one of these is a changelog write of the event
being processed, so its offset is committed only once all of them are durable
(`streams.runtime.acks`). `get(key)` and `values()` serve the admin API: the
joined record whole, and the index rows (enough to count what waits).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

from streams.core import pendingrows
from streams.core.pending import Pending

log = logging.getLogger("cs_relay")

Table = MutableMapping[str, Any]


class PendingStore:
    def __init__(self, index: Table, payloads: Table) -> None:
        self.index = index
        self.payloads = payloads
        self.missing = 0  # payload rows found missing (see pendingrows.read)

    def read(self, key: str) -> Pending:
        """The user's pending record, decoded once per version of its index row where the
        index keeps rows (`rows.CachedRows.decoded`)."""
        decoded = getattr(self.index, "decoded", None)
        if decoded is None:
            return self.join(key, self.index.get(key))
        return decoded(key, lambda row: self.join(key, row))

    def join(self, key: str, row: Any) -> Pending:
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
        put_decoded = getattr(self.index, "put", None)  # the row cache keeps `after` as the row's record
        if put_decoded is not None:
            put_decoded(key, row, after)
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
