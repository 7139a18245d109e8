"""Reading one partition of a Faust table without scanning the others, a chunk at a time.

The hourly sweep (streams.runtime.sweep) looks at the users of one by-user partition at a time.
Faust's `table.items()` walks every partition this worker owns, so sweeping P
partitions read each key P times, all of it on the event loop. With the RocksDB store a
table keeps one database per partition, and a key lives in the database of the
partition whose event wrote it, which for cs-relay's by-user tables is the key's owner
partition. `items_of_partition` reads that database alone; other stores (Faust's
in-memory one, or a plain dict in unit tests) are scanned and filtered by the owner
function instead.

It yields rows lazily in key order, from the first key after `after` (a cursor: the
last key of the previous chunk), so the sweep takes a bounded chunk per record and
the next record goes on where it stopped (RocksDB seeks there; it does not read the
rows before it again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def items_of_partition(
    table: Any, partition: int, owner: Callable[[Any], int], after: Any = None
) -> Iterator[tuple[Any, Any]]:
    store = getattr(table, "data", None)
    dbs = getattr(store, "_dbs", None)
    if isinstance(dbs, dict) and hasattr(store, "_visible_items"):
        assert store is not None  # it has the `_dbs` just read
        db = dbs.get(partition)
        if db is None:
            return
        for raw_key, raw_value in _raw_items(store, db, after):
            key = store._decode_key(raw_key)
            if after is not None and key == after:
                continue
            if owner(key) == partition:  # the rule above, checked rather than trusted
                yield key, store._decode_value(raw_value)
        return
    rows = [(k, v) for k, v in list(table.items()) if owner(k) == partition and (after is None or k > after)]
    yield from sorted(rows, key=lambda row: row[0])


def _raw_items(store: Any, db: Any, after: Any) -> Iterator[tuple[bytes, bytes]]:
    """The database's rows in key order, from `after` (inclusive) when given."""
    if after is None:
        yield from store._visible_items(db)
        return
    start = store._encode_key(after)
    if getattr(store, "use_rocksdict", False):
        it = db.items(from_key=start)
    else:  # python-rocksdb
        it = db.iteritems()  # noqa: B301
        it.seek(start)
    for key, value in it:
        if key != store.offset_key:
            yield key, value
