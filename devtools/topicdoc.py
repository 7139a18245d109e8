"""The topic lists of docs/operations.md and docs/configuration.md, written from the code.

    python -m devtools.topicdoc          rewrite them (after changing streams/runtime/topiclist.py)
    python -m devtools.topicdoc --check  exit 1 when a document is out of date

Each document holds, between the markers below, what `cs-relay topics` prints for the
default settings (`streams.cli.topics.render`); tests/test_topics_cli.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.cli.topics import render
from streams.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCUMENTS = (DOCS / "operations.md", DOCS / "configuration.md")
BEGIN = "<!-- topics: written by `python -m devtools.topicdoc` from `cs-relay topics`; edit the code, not this -->"
END = "<!-- end of topics -->"


def section() -> str:
    """`cs-relay topics` with the default settings, as a fenced block between the markers."""
    return "\n".join([BEGIN, "", "```text", "$ cs-relay topics", render(Settings.from_env({})), "```", "", END])


def rewritten(document: str) -> str:
    start, end = document.index(BEGIN), document.index(END) + len(END)
    return document[:start] + section() + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.topicdoc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the documents are up to date")
    args = parser.parse_args(argv)
    stale = []
    for path in DOCUMENTS:
        before = path.read_text()
        after = rewritten(before)
        if after != before:
            stale.append(path)
            if not args.check:
                path.write_text(after)
    if args.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}: run python -m devtools.topicdoc", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
