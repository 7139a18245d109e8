"""No runtime module but the app's wiring (streams/runtime/app.py) imports `streams.ops`:
the operator side observes the runtime through `streams.runtime.observing.Observer`,
which the wiring connects, and what both need (the replay headers, `owner_partition`,
the pending counts) lives in modules of their own outside `streams.ops`. Checked in the
source (an import anywhere in a module, a function's too) and in a fresh interpreter
(an import through another package)."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import streams.runtime
from tests.freshimports import loaded_after_importing

RUNTIME = Path(streams.runtime.__file__).parent
WIRING = {"streams.runtime.app"}


def runtime_modules() -> list[str]:
    return sorted(f"streams.runtime.{m.name}" for m in pkgutil.iter_modules([str(RUNTIME)]))


def ops_imports(source: str) -> list[str]:
    """The `streams.ops` modules a module's source imports, wherever it does."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[:2] == ["streams", "ops"]]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[:2] == ["streams", "ops"]:
                found.append(node.module)
            elif node.module == "streams":
                found += [f"streams.{a.name}" for a in node.names if a.name == "ops"]
    return found


def test_the_check_finds_every_form_of_import():
    source = (
        "import streams.ops.dlq\n"
        "from streams.ops import observe\n"
        "from streams import ops\n"
        "def f():\n"
        "    from streams.ops.admin import x\n"
    )
    assert ops_imports(source) == ["streams.ops.dlq", "streams.ops", "streams.ops", "streams.ops.admin"]
    assert ops_imports('"""mentions streams.ops.observe"""\nfrom streams.core import control\n') == []


def test_only_the_wiring_imports_ops_in_its_source():
    names = runtime_modules()
    assert WIRING <= set(names) and "streams.runtime.runtime" in names and len(names) >= 20
    offending = {}
    for name in names:
        path = RUNTIME / f"{name.rsplit('.', 1)[1]}.py"
        if name not in WIRING and (imported := ops_imports(path.read_text())):
            offending[name] = imported
    assert offending == {}, f"runtime modules importing streams.ops: {offending}"
    assert ops_imports((RUNTIME / "app.py").read_text()), "the wiring connects ops: the check would be empty"


def test_importing_every_runtime_module_but_the_wiring_loads_no_ops_module():
    modules = [m for m in runtime_modules() if m not in WIRING]
    loaded = loaded_after_importing(modules, RUNTIME.parents[1])
    assert set(modules) <= loaded
    assert sorted(m for m in loaded if m == "streams.ops" or m.startswith("streams.ops.")) == []
