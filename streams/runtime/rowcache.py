"""Decoded table rows kept in memory, so that a row read again and again is decoded once.

Every read of a Faust table on RocksDB fetches the row's bytes and decodes its JSON: a
user's pending record is read by the route of each of its events and again by each of
their deliveries (is an earlier one parked?), its dedupe and user rows by every event.
Measured with py-spy under a CustomerSuccessBox outage at 200 events/s, the worker at a
full core, table reads took 14 % of its CPU (`make faults`, tests/test_faults_isolation.py).

`CachedRows` wraps one table (the users, pending, seen and groups tables of the worker:
streams.runtime.app): reads come from an LRU of the last `size` rows read or written,
writes go to the table and the LRU alike (write-through), `decoded(key, reader)` keeps the
state record made from the row until the row is replaced (the same profile: decoding a
user's pending record into its `Pending` took another 4 %), and anything else (`keys()`,
the store behind `data` that the scans read) is the table's own. Rows must be treated as
read-only (the state readers copy what they keep). The worker clears the rows on every
assignment (`clear()`): recovery may then have replaced rows behind the cache's back.

The LRU is bounded twice: at most `size` rows, and at most `max_bytes` of them by
`streams.core.memsize.approx_bytes` (the key, the LRU's own ENTRY_BYTES, and the row
counted twice: once for itself, once for what `decoded` made of it, of about its size).
A user row with large traits takes its share of the bytes rather than one of `size`
slots, so 4,096 rows of 1 MB each cannot add up to 4 GB; a row above `max_bytes` alone
is read and written but not kept. The estimate costs about 2 us per row kept (a miss or
a write; a hit costs nothing more).

What every event does with it (the reads, the writes, the seen table's partition-local
rows) is `streams.runtime.rows.KeptRows`, in the state door; what is here is the rest of
the table's interface, which the admin API, the scans and the sweep use.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from streams.runtime.rows import KeptRows


class CachedRows(KeptRows, MutableMapping[Any, Any]):
    def __getitem__(self, key: Any) -> Any:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __delitem__(self, key: Any) -> None:
        self._drop(key)
        del self.table[key]

    def delete_local(self, partition: int, key: Any) -> None:
        self._drop(key)
        self._local.delete_local(partition, key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def forget(self, key: Any = None) -> None:
        """Forget the row of `key` (None: every row): it changed in the table."""
        if key is None:
            self.clear()
        else:
            self._drop(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)  # keys(), data, send_changelog, ...
