"""No child outlives its parent: every process cs-relay, its bench and its dev tools
start with `subprocess.Popen` asks the kernel to kill it when its parent goes
(`preexec_fn=childproc.dies_with_parent()`, streams/childproc.py). A bench stopped with
SIGKILL (or a terminal closed) left its worker running before this was checked."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streams", "bench", "devtools")


def _popen_calls() -> list[tuple[str, int, ast.Call]]:
    files = subprocess.run(
        ["git", "ls-files", "--", *(f"{p}/*.py" for p in PACKAGES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    calls = []
    for name in files:
        tree = ast.parse((ROOT / name).read_text(), filename=name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Popen":
                calls.append((name, node.lineno, node))
    return calls


def _asks_to_die_with_parent(call: ast.Call) -> bool:
    for keyword in call.keywords:
        if keyword.arg == "preexec_fn" and isinstance(keyword.value, ast.Call):
            func = keyword.value.func
            if isinstance(func, ast.Attribute) and func.attr == "dies_with_parent":
                return True
    return False


def test_the_scan_finds_the_processes_started():
    found = {name for name, _, _ in _popen_calls()}
    assert {"streams/localkafka/broker.py", "devtools/dev.py", "bench/harness.py"} <= found


def test_every_child_process_dies_with_its_parent():
    orphans = [f"{name}:{line}" for name, line, call in _popen_calls() if not _asks_to_die_with_parent(call)]
    assert orphans == [], "started without preexec_fn=childproc.dies_with_parent(): " + ", ".join(orphans)
