"""The `seen` table: a Faust table whose packed rows are index rows in its store.

The dedupe entries of a partition reach the changelog packed, many to a record
(streams.core.seenpack); lookups read one index row per entry. `SeenTable` keeps the
two apart, as Faust's own SetTable keeps a set's changelog operations apart from its
stored sets:

* live, the worker writes each index row to the local store alone (`put_local`: the
  store of the partition, no changelog record) and the packed row to the changelog
  (`write_packed`, whose changelog write the events wait for), keeping in the store
  only its summary (`seenpack.summary_of`: when its newest entry expires);
* on recovery and on standbys, `apply_changelog_batch` stores every other record as
  itself (the rows of older workers: one row per id, or per user), and a packed row
  as its summary and the index rows it expands into, so a lookup after a restore or a
  take-over is a point read, as before it.

The partition is explicit: a packed row may be written between events (its linger ran
out, streams.runtime.seenpacks), when Faust knows of no current event. The worker's
row cache over the table (`streams.runtime.rows.KeptRows`, the state door) reads and
writes the partition's RocksDB database itself, as `get_local` and `put_local` do here:
a track's lookup and its index row do not enter this module. `local_of(table)` gives
any table those four methods (`ByItem`: a row per item, for unit tests' tables).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import faust

from streams.core import seenpack

log = logging.getLogger("cs_relay")


class SeenTable(faust.Table):
    _last_key: tuple[str, bytes] = ("", b"")

    def _raw_key(self, store: Any, key: str) -> bytes:
        """The key as the store has it. Faust's serializer takes ~3 us; an event's lookup
        and its write that follows name the same key: encoded once."""
        last, raw = self._last_key
        if last != key or not raw:
            raw = store._encode_key(key)
            self._last_key = (key, raw)
        return raw

    def put_local(self, partition: int, key: str, value: Any) -> None:
        """Write a row to the store of `partition` only: no changelog record."""
        store: Any = self.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is not None:  # RocksDB: one database per partition, rows as bytes
            raw = self._raw_key(store, key)
            db_for(partition).put(raw, store._encode_value(value))
            store._key_index[raw] = partition
        else:  # Faust's in-memory store
            store.data[key] = value
            store._key_partition[key] = partition

    def get_local(self, partition: int, key: str) -> Any:
        """A row of the store of `partition`, or None: one point read (a Faust read is
        two, `in` then the read, of the current event's partition)."""
        store: Any = self.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is None:  # Faust's in-memory store
            return store.data.get(key)
        raw = db_for(partition).get(self._raw_key(store, key))
        return None if raw is None else store._decode_value(raw)

    def delete_local(self, partition: int, key: str) -> None:
        store: Any = self.data
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is not None:
            raw = store._encode_key(key)
            db_for(partition).delete(raw)
            store._key_index.pop(raw, None)
        else:
            store.data.pop(key, None)
            store._key_partition.pop(key, None)

    def write_packed(self, partition: int, key: str, value: Any) -> Any:
        """Write a packed row to the changelog partition `partition`, and its summary to
        the store; returns the changelog write (a future Kafka's acknowledgement
        completes)."""
        self.put_local(partition, key, seenpack.summary_of(value))
        return self.send_changelog(partition, key, value)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch(list(_with_index_rows(self.data, batch)))


def _with_index_rows(store: Any, batch: Iterable[Any]) -> Iterable[Any]:
    """The batch's records; a packed row as its summary followed by its index rows, as
    records of the same changelog offset (a store writes the raw or the decoded form:
    the RocksDB store the raw bytes, the in-memory one the decoded values)."""
    encode_key = getattr(store, "_encode_key", None)
    encode_value = getattr(store, "_encode_value", None)

    def record(event: Any, key: str, value: Any) -> Any:
        message = SimpleNamespace(
            tp=event.message.tp,
            partition=event.message.partition,
            offset=event.message.offset,
            key=encode_key(key) if encode_key else key,
            value=encode_value(value) if encode_value else value,
        )
        return SimpleNamespace(key=key, value=value, message=message)

    for event in batch:
        key = event.key
        if event.message.value is None or not isinstance(key, str) or not seenpack.is_pack_key(key):
            yield event
            continue
        try:
            summary, rows = seenpack.summary_of(event.value), seenpack.expand(event.value)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            log.warning("a packed dedupe row at %s could not be read: %s", event.message.tp, exc)
            yield event  # kept as it is: a newer worker's, perhaps
            continue
        yield record(event, key, summary)
        for index_key, index_value in rows:
            yield record(event, index_key, index_value)


def local_of(table: Any) -> Any:
    """What reads and writes `table`'s rows by partition: the table itself where it can
    (`SeenTable`; the row cache, `streams.runtime.rows.KeptRows`, over one), else
    `ByItem` over it (unit tests' tables)."""
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
        """The row as an item, and no write returned: the row's events wait for nothing
        (a table that stands for the worker's returns its changelog write's future)."""
        self.table[key] = value


def seen_table(app: faust.App, name: str, options: dict[str, Any]) -> SeenTable:
    """The app's `seen` table (as `app.Table` makes a table, of this class)."""
    table = SeenTable(app, name=name, default=None, beacon=app.tables.beacon, options=options)
    app.tables.add(table)
    return table
