"""Figures measured by end-to-end tests (duplicates, recovery and failover times).

Only correctness is asserted; the figures are reported, not checked. `report` prints a
figure line to stderr (seen with `pytest -s` or on failure) and keeps it for the
"cs-relay figures" section that conftest.py adds to the end of every pytest run, so
`make test` and CI show them too.
"""

from __future__ import annotations

import sys

FIGURES: list[str] = []


def report(name: str, **figures) -> None:
    line = f"[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items())
    FIGURES.append(line)
    print("\n" + line, file=sys.stderr)
