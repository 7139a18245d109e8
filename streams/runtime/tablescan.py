"""Reading one partition of a Faust table without scanning the others.

The hourly sweep (streams.runtime.sweep) looks at the users of one by-user partition at a time.
Faust's `table.items()` walks every partition this worker owns, so sweeping P
partitions read each key P times, all of it on the event loop. With the RocksDB store a
table keeps one database per partition, and a key lives in the database of the
partition whose event wrote it, which for cs-relay's by-user tables is the key's owner
partition. `items_of_partition` reads that database alone; other stores (Faust's
in-memory one, or a plain dict in unit tests) are scanned and filtered by the owner
function instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def items_of_partition(table: Any, partition: int, owner: Callable[[Any], int]) -> Iterator[tuple[Any, Any]]:
    store = getattr(table, "data", None)
    dbs = getattr(store, "_dbs", None)
    visible = getattr(store, "_visible_items", None)
    if isinstance(dbs, dict) and visible is not None:
        assert store is not None  # it has the `_dbs` just read
        db = dbs.get(partition)
        if db is None:
            return
        for raw_key, raw_value in list(visible(db)):
            key = store._decode_key(raw_key)
            if owner(key) == partition:  # the rule above, checked rather than trusted
                yield key, store._decode_value(raw_value)
        return
    for key, value in list(table.items()):
        if owner(key) == partition:
            yield key, value
