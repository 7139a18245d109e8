"""streams.runtime.seentable on Faust's RocksDB store (real databases, no broker): the
rows recovery and standbys read from the changelog as raw bytes, packed rows expanded
into index rows a lookup reads with one point read, and the rows a worker writes to
its store alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from streams.core import dedupe, seenpack
from streams.runtime import seentable
from streams.runtime.rowcache import CachedRows

CHANGELOG = "app-seen-changelog"


def rocksdb_table(tmp_path: Any) -> seentable.SeenTable:
    app = faust.App("seen-rocksdb-test", store="rocksdb://", datadir=str(tmp_path))
    return seentable.seen_table(app, "seen", {})


def changelog_event(table: seentable.SeenTable, partition: int, offset: int, key: str, value: Any) -> Any:
    """A changelog record as recovery hands it to the table: decoded, and its raw bytes
    as Kafka has them (the table's own serializers)."""
    store = table.data
    raw_value = None if value is None else store._encode_value(value)
    message = SimpleNamespace(
        tp=TP(CHANGELOG, partition), partition=partition, offset=offset, key=store._encode_key(key), value=raw_value
    )
    return SimpleNamespace(key=key, value=value, message=message)


def test_recovery_expands_packed_rows_into_index_rows_in_the_partitions_database(tmp_path):
    table = rocksdb_table(tmp_path)
    packer = seenpack.Packer()
    packer.add(dedupe.row_key("u1", "m1"), 4, 100.0)
    packer.add(dedupe.row_key("u2", "dlq/0/9", replay=True), 5, 101.0)
    older = dedupe.row_key("u3", "m3")  # written by an older worker: a record of its own
    table.apply_changelog_batch(
        [
            changelog_event(table, 2, 10, seenpack.pack_key(2, "w.4"), packer.value()),
            changelog_event(table, 2, 11, older, dedupe.row(6, 102.0)),
        ]
    )
    store = table.data
    rows = dict((store._decode_key(k), store._decode_value(v)) for k, v in store._visible_items(store._dbs[2]))
    assert rows[dedupe.row_key("u1", "m1")] == seenpack.index_row(4, 100.0)
    assert rows[dedupe.row_key("u2", "dlq/0/9", replay=True)] == seenpack.index_row(5, 101.0)
    assert rows[older] == dedupe.row(6, 102.0)
    assert rows[seenpack.pack_key(2, "w.4")] == {"v": 1, "newest": 101.0, "n": 2}  # what the sweep needs of it
    assert table.get(dedupe.row_key("u1", "m1")) == seenpack.index_row(4, 100.0)
    assert store.persisted_offset(TP(CHANGELOG, 2)) == 11

    table.apply_changelog_batch([changelog_event(table, 2, 12, seenpack.pack_key(2, "w.4"), None)])
    assert table.get(seenpack.pack_key(2, "w.4")) is None


def test_a_worker_writes_index_rows_to_its_store_alone(tmp_path):
    table = rocksdb_table(tmp_path)
    sent: list[tuple[int, str, Any]] = []
    table.send_changelog = lambda partition, key, value: sent.append((partition, key, value))  # type: ignore[method-assign]
    key = dedupe.row_key("u1", "m1")
    table.put_local(3, key, seenpack.index_row(1, 2.0))
    assert table.get(key) == seenpack.index_row(1, 2.0) and sent == []
    table.write_packed(3, seenpack.pack_key(3, "w.1"), {"v": 1, "e": [["u1", "m", "m1", 1, 2.0]]})
    assert sent == [(3, seenpack.pack_key(3, "w.1"), {"v": 1, "e": [["u1", "m", "m1", 1, 2.0]]})]
    assert 3 in table.data._dbs and table.get(seenpack.pack_key(3, "w.1")) == {"v": 1, "newest": 2.0, "n": 1}
    table.delete_local(3, key)
    assert table.get(key) is None and len(sent) == 1


def test_a_lookup_reads_the_partitions_database_once(tmp_path):
    """`get_local`: what `put_local` and recovery left in a partition's database, with
    one point read of that database (a Faust read is two, in the current event's)."""
    table = rocksdb_table(tmp_path)
    key, restored = dedupe.row_key("u1", "m1"), dedupe.row_key("u2", "m2")
    table.put_local(3, key, seenpack.index_row(1, 2.0))
    table.apply_changelog_batch([changelog_event(table, 2, 7, restored, dedupe.row(6, 102.0))])
    store: Any = table.data
    reads: list[bytes] = []
    for partition in (2, 3):
        db = store._db_for_partition(partition)
        store._dbs[partition] = counted(db, reads)
    assert table.get_local(3, key) == seenpack.index_row(1, 2.0)
    assert table.get_local(2, restored) == dedupe.row(6, 102.0)
    assert table.get_local(2, key) is None and table.get_local(3, dedupe.row_key("u1", "m9")) is None
    assert len(reads) == 4


def counted(db: Any, reads: list[bytes]) -> Any:
    class Counted:
        def get(self, raw: bytes) -> Any:
            reads.append(raw)
            return db.get(raw)

        def __getattr__(self, name: str) -> Any:
            return getattr(db, name)

    return Counted()


def test_the_row_cache_over_it_reads_and_writes_the_partitions_database_itself(tmp_path, monkeypatch):
    """The worker's row cache over the seen table (the state door, streams.runtime.rows)
    reads and writes a partition's database directly, as the table's own `get_local`,
    `put_local` and `write_packed` do, without calling them: what one writes, the other
    reads."""
    table = rocksdb_table(tmp_path)
    sent: list[tuple[int, str, Any]] = []
    table.send_changelog = lambda partition, key, value: sent.append((partition, key, value))  # type: ignore[method-assign]
    mine, theirs, restored = dedupe.row_key("u1", "m1"), dedupe.row_key("u2", "m2"), dedupe.row_key("u3", "m3")
    table.put_local(3, theirs, seenpack.index_row(7, 8.0))
    table.apply_changelog_batch([changelog_event(table, 2, 7, restored, dedupe.row(6, 102.0))])
    rows = CachedRows(table)
    for name in ("get_local", "put_local", "write_packed"):
        monkeypatch.setattr(seentable.SeenTable, name, _not_called)
    rows.put_local(3, mine, seenpack.index_row(1, 2.0))
    assert rows.get_local(3, mine) == seenpack.index_row(1, 2.0)
    assert rows.get_local(3, theirs) == seenpack.index_row(7, 8.0)
    assert rows.get_local(2, restored) == dedupe.row(6, 102.0) and rows.get_local(2, mine) is None
    pack = {"v": 1, "e": [["u1", "m", "m1", 1, 2.0]]}
    rows.write_packed(3, seenpack.pack_key(3, "w.1"), pack)
    assert sent == [(3, seenpack.pack_key(3, "w.1"), pack)]
    monkeypatch.undo()
    assert table.get_local(3, mine) == seenpack.index_row(1, 2.0)  # in the partition's database
    assert table.get_local(3, seenpack.pack_key(3, "w.1")) == {"v": 1, "newest": 2.0, "n": 1}
    rows.delete_local(3, mine)  # the sweep's, through the table
    assert table.get_local(3, mine) is None and rows.get_local(3, mine) is None and len(sent) == 1


def _not_called(*args: Any) -> Any:
    raise AssertionError("the row cache reads and writes the database itself")
