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

`chunks_of_partition` does the same for a scan on the event loop (the rescans after an
assignment): each chunk is read when it is asked for, with a new iterator from the
previous chunk's last key, so the caller yields to the loop between chunks and no
iterator (nor its snapshot of the rows) outlives a chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any


def chunks_of_partition(
    table: Any, partition: int, owner: Callable[[Any], int], size: int
) -> Iterator[list[tuple[Any, Any]]]:
    """The partition's rows, `size` at most per chunk; a chunk may be empty. On RocksDB
    each chunk seeks from the previous one's last key and reads no more than its rows
    (and that key again). Other stores are plain mappings in memory: their keys are
    copied once (nothing decoded) and `size` keys are looked at per chunk."""
    if _rocksdb_store(table) is not None:
        after = None
        while True:
            rows = list(islice(items_of_partition(table, partition, owner, after=after), size))
            yield rows
            if len(rows) < size:
                return
            after = rows[-1][0]
    keys = list(table.keys())
    for start in range(0, len(keys), size):
        rows = [(k, table.get(k)) for k in keys[start : start + size] if owner(k) == partition]
        yield [(k, v) for k, v in rows if v is not None]  # removed since the keys were copied


def _rocksdb_store(table: Any) -> Any:
    store = getattr(table, "data", None)
    return store if isinstance(getattr(store, "_dbs", None), dict) and hasattr(store, "_visible_items") else None


def items_of_partition(
    table: Any, partition: int, owner: Callable[[Any], int], after: Any = None
) -> Iterator[tuple[Any, Any]]:
    store = _rocksdb_store(table)
    if store is not None:
        db = store._dbs.get(partition)
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
