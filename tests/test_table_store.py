"""streams.runtime.tablestore: a worker's RocksDB databases share one memory budget.
Index and filter blocks are charged to the shared cache instead of living beside each
open table file, and the memtables of all databases together stay near their share.
Real RocksDB databases (rocksdict), as Faust opens them, side by side with Faust's own
options on the same data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faust.stores.rocksdb import RocksDBOptions

from streams.runtime.relayapp import TABLE_OPTIONS
from streams.runtime.tablestore import SharedOptions, TableMemory

MB = 1024 * 1024
# Rows written to each of 8 databases: about 19 MB in all, the 2 MB share of the
# memtables passed and flushed some 9 times (was 40,000: twice the time, the same peaks).
ROWS = 20_000


def _open(tmp_path: Path, n: int, memory: TableMemory | None) -> list:
    dbs = []
    for i in range(n):
        if memory is None:
            options = RocksDBOptions(block_cache_size=4 * MB, **TABLE_OPTIONS)
        else:
            options = SharedOptions(memory, **TABLE_OPTIONS)
        dbs.append(options.open(tmp_path / f"{i}.db"))
    return dbs


def _total(dbs: list, name: str) -> int:
    return sum(db.property_int_value(name) for db in dbs)


def _index_and_filter_outside_the_cache(tmp_path: Path, memory: TableMemory | None) -> int:
    dbs = _open(tmp_path, 4, memory)
    for db in dbs:
        for n in range(100_000):
            db[f"user-{n:09d}".encode()] = b"1"
        db.flush()
        db.compact_range(None, None)
    for db in dbs:
        for n in range(0, 100_000, 97):
            assert db.get(f"user-{n:09d}".encode()) == b"1"
    readers = _total(dbs, "rocksdb.estimate-table-readers-mem")
    for db in dbs:
        db.close()
    return readers


def test_index_and_filter_blocks_are_charged_to_the_shared_cache(tmp_path):
    memory = TableMemory(8 * MB, 2 * MB)
    shared = _index_and_filter_outside_the_cache(tmp_path / "shared", memory)
    faust = _index_and_filter_outside_the_cache(tmp_path / "faust", None)
    # Faust's options keep each file's index and filter blocks beside it (about 24 KB
    # per file of 100,000 keys here); charged to the cache, a file keeps about 2 KB.
    assert shared * 4 < faust, (shared, faust)
    assert 0 < memory.usage() <= memory.budget_bytes


def _until_flushed(dbs: list, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(db.property_int_value("rocksdb.mem-table-flush-pending") for db in dbs):
        assert time.monotonic() < deadline, "RocksDB did not flush"
        time.sleep(0.01)


def _peak_memtables(tmp_path: Path, memory: TableMemory | None) -> int:
    """`ROWS` rows written to 8 databases in rounds (500 rows of ~120 bytes to each), each round
    once the flushes asked for have run (a worker writes a few hundred KB a second at
    most; flushes keep up): the most memory all memtables held after a round."""
    dbs = _open(tmp_path, 8, memory)
    peak = 0
    value = b"v" * 100
    for n in range(ROWS):
        for db in dbs:
            db[f"user-{n:09d}".encode()] = value
        if n % 500 == 499:
            peak = max(peak, _total(dbs, "rocksdb.size-all-mem-tables"))
            _until_flushed(dbs)
    for db in dbs:
        db.close()
    return peak


def test_the_memtables_of_all_databases_stay_near_their_share_of_the_budget(tmp_path):
    memory = TableMemory(8 * MB, 2 * MB)
    shared = _peak_memtables(tmp_path / "shared", memory)
    faust = _peak_memtables(tmp_path / "faust", None)
    # Each database alone may hold two 2 MB memtables (32 MB for 8): with Faust's
    # options each fills its own; shared, the one written is flushed once all together
    # pass the share (a round's writes on top: 0.5 MB).
    assert faust > 8 * MB, faust
    assert shared <= memory.write_buffer_bytes + MB, (shared, faust)


def test_a_budget_without_room_for_blocks_is_refused():
    with pytest.raises(ValueError):
        TableMemory(4 * MB, 4 * MB)
