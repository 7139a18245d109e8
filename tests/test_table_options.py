"""Every table of the worker opens its RocksDB databases with cs-relay's memory bounds
(streams.runtime.relayapp.TABLE_OPTIONS and one TableMemory shared by all databases,
streams.runtime.tablestore), not Faust's defaults (64 MB write buffers, a 2 GB block
cache per database, index and filter blocks outside any cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.runtime.relayapp import TABLE_MEMORY_BYTES, TABLE_OPTIONS, TABLE_WRITE_BUFFER_BYTES
from streams.runtime.topiclist import TABLES

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json
from streams.runtime import app, tablestore
stores = {t.name: t.data for t in app.app.tables.values()}
print(json.dumps({
    name: {
        "store": type(s).__module__ + "." + type(s).__name__,
        "shared": s.rocksdb_options.memory is app.app.table_memory,
        "options": {k: getattr(s.rocksdb_options, k) for k in %r},
    }
    for name, s in stores.items()
}))
"""


def test_every_table_opens_its_rocksdb_with_the_bounded_shared_options(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CS_RELAY_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (sorted(TABLE_OPTIONS),)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stores = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(stores) == sorted(TABLES)  # every table the topic list declares
    assert all(s["store"] == "streams.runtime.tablestore.Store" for s in stores.values()), stores
    assert all(s["shared"] for s in stores.values()), stores
    assert all(s["options"] == TABLE_OPTIONS for s in stores.values()), stores
    assert TABLE_OPTIONS["write_buffer_size"] <= 4 * 1024 * 1024
    assert TABLE_WRITE_BUFFER_BYTES < TABLE_MEMORY_BYTES <= 64 * 1024 * 1024
