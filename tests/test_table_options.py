"""Every table of the worker opens its RocksDB databases with cs-relay's memory bounds
(streams.runtime.relayapp.TABLE_OPTIONS), not Faust's defaults (64 MB write buffers,
a 2 GB block cache per database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.runtime.relayapp import TABLE_OPTIONS

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json
from streams.runtime import app
stores = {t.name: t.data.rocksdb_options for t in app.app.tables.values()}
print(json.dumps({name: {k: getattr(o, k) for k in %r} for name, o in stores.items()}))
"""


def test_every_table_opens_its_rocksdb_with_the_bounded_options(tmp_path):
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
    options = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(options) == ["groups", "payloads", "pending", "seen", "users", "waiters", "windows"]
    assert all(o == TABLE_OPTIONS for o in options.values()), options
    assert TABLE_OPTIONS["write_buffer_size"] <= 4 * 1024 * 1024
    assert TABLE_OPTIONS["block_cache_size"] <= 8 * 1024 * 1024
