"""What a fresh interpreter has loaded after importing some modules: for the tests of
who may import what (tests/test_core_purity.py, tests/test_runtime_imports.py), so that
what other tests imported does not hide a dependency."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def loaded_after_importing(modules: Sequence[str], cwd: Path) -> set[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=cwd)
    return set(json.loads(out.stdout))
