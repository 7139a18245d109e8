"""The destinations' part of docs/configuration.md, written from the registry.

    python -m devtools.configdoc          rewrite it (after adding or changing a destination)
    python -m devtools.configdoc --check  exit 1 when the document is out of date

Each destination's variables come from its plugin (`streams/destinations/<key>/settings.py`),
so the reference cannot drift from the code; tests/test_configdoc.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from streams.destinations import REGISTRY
from streams.destinations.base import Plugin

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN = "<!-- destinations: written by `python -m devtools.configdoc`; edit the plugins, not this -->"
END = "<!-- end of destinations -->"


def render(plugins: Iterable[Plugin]) -> str:
    lines = [BEGIN]
    for p in plugins:
        lines += ["", f"### {p.name} (`{p.key}`)", "", f"Disabled unless configured: {p.enable_hint}.", ""]
        lines += ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        for v in p.variables:
            allowed = f"{v.allowed} (secret)" if v.secret else v.allowed
            lines.append(f"| `{v.name}` | {v.default} | {allowed} | {v.meaning} |")
    lines += ["", END]
    return "\n".join(lines)


def rewritten(document: str, section: str) -> str:
    """`document` with the text between the markers replaced by `section`."""
    start, end = document.index(BEGIN), document.index(END) + len(END)
    return document[:start] + section + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.configdoc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the document is up to date")
    args = parser.parse_args(argv)
    before = DOC.read_text()
    after = rewritten(before, render(REGISTRY))
    if args.check:
        if after != before:
            print(f"{DOC} is out of date: run python -m devtools.configdoc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
