"""Decoded table rows kept in memory, so that a row read again and again is decoded once.

Every read of a Faust table on RocksDB fetches the row's bytes and decodes its JSON: a
user's pending record is read by the route of each of its events and again by each of
their deliveries (is an earlier one parked?), its dedupe and user rows by every event.
Measured with py-spy under a CustomerSuccessBox outage at 200 events/s, the worker at a
full core, table reads took 14 % of its CPU (`make faults`, tests/test_faults_isolation.py).

`CachedRows` wraps one table (the users, pending and seen tables of the `Runtime`): reads
come from an LRU of the last `size` rows read or written, writes go to the table and the
LRU alike (write-through), `decoded(key, reader)` keeps the state record made from the
row until the row is replaced (the same profile: decoding a user's pending record into
its `Pending` took another 4 %), and anything else (`keys()`, the store behind `data` that the
scans read) is the table's own. Rows must be treated as read-only (the state readers
copy what they keep). The worker clears the rows on every assignment (`clear()`):
recovery may then have replaced rows behind the cache's back.

The LRU is bounded twice: at most `size` rows, and at most `max_bytes` of them by
`streams.core.memsize.approx_bytes` (the key, the LRU's own ENTRY_BYTES, and the row
counted twice: once for itself, once for what `decoded` made of it, of about its size).
A user row with large traits takes its share of the bytes rather than one of `size`
slots, so 4,096 rows of 1 MB each cannot add up to 4 GB; a row above `max_bytes` alone
is read and written but not kept. The estimate costs about 2 us per row kept (a miss or
a write; a hit costs nothing more).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

from streams.core.memsize import approx_bytes
from streams.runtime import seenpacks

_ABSENT = object()
ROWS = 4096
MAX_BYTES = 16 * 1024 * 1024  # per table (users, pending, seen: 48 MB); 4,096 user rows of ~4 KB fit
ENTRY_BYTES = 200  # the LRU's node and the entry's list
T = TypeVar("T")


class CachedRows(MutableMapping[Any, Any]):
    def __init__(self, table: Any, size: int = ROWS, max_bytes: int = MAX_BYTES) -> None:
        self.table = table
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # the estimate of what the rows kept take
        # key -> [row, what `decoded` made of it, the entry's estimated bytes]
        self._rows: OrderedDict[Any, list[Any]] = OrderedDict()
        self._local = seenpacks.local_of(table)  # the rows by partition (`get_local` ...)

    def get(self, key: Any, default: Any = None) -> Any:
        row = self._entry(key)[0]
        return default if row is None else row

    def decoded(self, key: Any, read: Callable[[Any], T]) -> T:
        """`read(row)` (a state reader: a frozen record made from the row), made once per
        version of the row: rows are replaced, never changed, so the same row object is
        the same version."""
        entry = self._entry(key)
        if entry[1] is _ABSENT:
            entry[1] = read(entry[0])
        return entry[1]

    def _entry(self, key: Any) -> list[Any]:
        entry = self._rows.get(key)
        if entry is None:
            entry = self._keep(key, self.table.get(key))
        else:
            self._rows.move_to_end(key)
        return entry

    def __getitem__(self, key: Any) -> Any:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.table[key] = value
        self._keep(key, value)

    def put(self, key: Any, row: Any, decoded: Any) -> None:
        """Write `row`, keeping `decoded` as what `decoded()` makes of it (the writer has
        the state record already: no need to read it back)."""
        self[key] = row
        entry = self._rows.get(key)
        if entry is not None:
            entry[1] = decoded

    def __delitem__(self, key: Any) -> None:
        self._drop(key)
        del self.table[key]

    def put_local(self, partition: int, key: Any, value: Any) -> None:
        """A row written to the store alone, no changelog record (streams.runtime.seenpacks):
        a new id's dedupe row, read again only if the id comes again, so not kept (one
        a track would push the users' rows out of the cache)."""
        self._drop(key)
        self._local.put_local(partition, key, value)

    def get_local(self, partition: int, key: Any) -> Any:
        """A row kept, else the store of `partition`'s (streams.runtime.seenpacks), not
        kept: a dedupe lookup of a new id, which `put_local` writes next."""
        entry = self._rows.get(key)
        if entry is None:
            return self._local.get_local(partition, key)
        self._rows.move_to_end(key)
        return entry[0]

    def delete_local(self, partition: int, key: Any) -> None:
        self._drop(key)
        self._local.delete_local(partition, key)

    def write_packed(self, partition: int, key: Any, value: Any) -> None:
        self._drop(key)  # read by the sweep alone: not kept
        self._local.write_packed(partition, key, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def clear(self) -> None:
        """Forget every row kept (the table keeps them)."""
        self._rows.clear()
        self.bytes = 0

    def forget(self, key: Any = None) -> None:
        """Forget the row of `key` (None: every row): it changed in the table."""
        if key is None:
            self.clear()
        else:
            self._drop(key)

    def _keep(self, key: Any, row: Any) -> list[Any]:
        self._drop(key)
        entry = [row, _ABSENT, ENTRY_BYTES + approx_bytes(key) + 2 * approx_bytes(row)]
        if entry[2] > self.max_bytes:
            return entry  # too large to keep: read from the table each time
        self._rows[key] = entry
        self.bytes += entry[2]
        while len(self._rows) > self.size or self.bytes > self.max_bytes:
            self.bytes -= self._rows.popitem(last=False)[1][2]
        return entry

    def _drop(self, key: Any) -> None:
        entry = self._rows.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)  # keys(), data, send_changelog, ...


def decoded(table: Any, key: Any, read: Callable[[Any], T]) -> T:
    """`read(table.get(key))`, made once per version of the row where the table keeps
    them (`CachedRows`); any other table (a dict in unit tests) reads it each time."""
    if isinstance(table, CachedRows):
        return table.decoded(key, read)
    return read(table.get(key))
