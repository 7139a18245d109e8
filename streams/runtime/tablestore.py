"""RocksDB under the worker's tables, in one memory budget for all its databases.

Faust opens one RocksDB database per table partition: nine tables x the partitions a
worker holds (72 with 8 partitions). Faust's `RocksDBOptions` gives each its own block
cache, its own write buffers, and keeps index and filter blocks outside any cache
(RocksDB's default: they live with the open table files and grow with the data). So a
worker's RocksDB memory was the sum of 56 separate bounds plus what the data's index and
filter blocks took.

`TableMemory` is one LRU cache per worker (`budget_bytes`) that every database of the
worker shares, with:

* index and filter blocks charged to it (`cache_index_and_filter_blocks`; those of
  level-0 files pinned while the file lives, as RocksDB advises, still charged);
* every memtable charged to it as well, through one `WriteBufferManager` that flushes
  the memtable being written once all of them together pass `write_buffer_bytes`.

RocksDB's memory for tables is then about `budget_bytes` in total whatever the number
of databases or users (the cache's capacity is not strict: pinned blocks may take it
over for a moment), plus a small fixed overhead per open database and table file.

`Store` is Faust's RocksDB store with those options; `register()` makes it Faust's
`relaydb://` store, which `streams.runtime.relayapp.create_app` asks for.
"""

from __future__ import annotations

from typing import Any

import faust.stores
import rocksdict
from faust.stores import rocksdb as faust_rocksdb

SCHEME = "relaydb"


class TableMemory:
    """The cache and write buffer manager that a worker's databases share."""

    def __init__(self, budget_bytes: int, write_buffer_bytes: int) -> None:
        if not 0 < write_buffer_bytes < budget_bytes:
            raise ValueError("the memtables' share must be positive and below the whole budget")
        self.budget_bytes = budget_bytes
        self.write_buffer_bytes = write_buffer_bytes
        self.cache = rocksdict.Cache(budget_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            write_buffer_bytes,
            False,
            self.cache,  # no stall: a write never waits for a flush
        )

    def usage(self) -> int:
        """Bytes charged to the cache now: blocks, index and filter blocks, memtables."""
        return int(self.cache.get_usage())


class SharedOptions(faust_rocksdb.RocksDBOptions):
    """Faust's RocksDB options (rocksdict driver) with the worker's shared `TableMemory`
    in place of a block cache per database."""

    def __init__(self, memory: TableMemory, **options: Any) -> None:
        options.pop("block_cache_size", None)  # the shared cache replaces it
        super().__init__(**options)
        self.memory = memory

    def as_options(self) -> Any:
        if not self.use_rocksdict:
            raise RuntimeError("cs-relay's table store needs the rocksdict driver")
        db_options = rocksdict.Options(raw_mode=True)
        db_options.create_if_missing(True)
        db_options.set_max_open_files(-1 if self.max_open_files is None else self.max_open_files)
        db_options.set_write_buffer_size(self.write_buffer_size)
        db_options.set_target_file_size_base(self.target_file_size_base)
        db_options.set_max_write_buffer_number(self.max_write_buffer_number)
        db_options.set_write_buffer_manager(self.memory.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.memory.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        db_options.set_block_based_table_factory(table)
        return db_options


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store whose databases share the app's `table_memory`."""

    def __init__(self, url: Any, app: Any, table: Any, **kwargs: Any) -> None:
        super().__init__(url, app, table, **kwargs)
        memory = getattr(app, "table_memory", None)
        if not isinstance(memory, TableMemory):
            raise RuntimeError(f"{SCHEME}:// tables need an app with a `table_memory` (streams.runtime.relayapp)")
        self.rocksdb_options = SharedOptions(memory, **dict(self.options or {}), use_rocksdict=self.use_rocksdict)


def register() -> None:
    """Make `relaydb://` name `Store` in Faust's store registry (idempotent)."""
    faust.stores.STORES.aliases[SCHEME] = f"{__name__}:Store"
