"""Every runtime module imports first: the routing door, the control-record handlers
and the flows import one another (streams.runtime.routing, .handlers, .groups, .merge,
.retries), and a table built at import (`handlers.HANDLERS`) must not meet a flow's
module half imported, whichever of them a process imports first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_runtime_imports import RUNTIME, runtime_modules

SCRIPT = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "streams.runtime" or m.startswith("streams.runtime.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print("\\n".join(failed))
"""


def test_each_runtime_module_can_be_imported_first():
    modules = runtime_modules()
    assert {"streams.runtime.routing", "streams.runtime.handlers", "streams.runtime.groups"} <= set(modules)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(RUNTIME).parents[1],
    )
    assert out.stdout.strip() == "", out.stdout
