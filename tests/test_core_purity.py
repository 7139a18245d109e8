"""The pure core (streams/core/) imports nothing that does I/O or needs Kafka: not
faust, aiohttp or aiokafka. Checked in a fresh interpreter, so that what other tests
imported does not hide a dependency."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import streams.core
from tests.freshimports import loaded_after_importing

FORBIDDEN = ("faust", "aiohttp", "aiokafka", "mode", "rocksdict", "yarl")
CORE = Path(streams.core.__file__).parent


def core_modules() -> list[str]:
    return sorted(f"streams.core.{m.name}" for m in pkgutil.iter_modules([str(CORE)]))


def test_the_core_has_the_modules_this_test_imports():
    names = core_modules()
    assert "streams.core.step" in names and "streams.core.control" in names and len(names) >= 10


def test_importing_every_core_module_loads_no_io_library():
    loaded = loaded_after_importing(core_modules(), CORE.parents[1])
    assert set(core_modules()) <= set(loaded)
    offending = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert offending == [], f"streams.core imports {offending}"
    outside = sorted(m for m in loaded if m.startswith("streams.") and not m.startswith("streams.core"))
    assert outside == [], f"streams.core imports the shell: {outside}"
