"""The topic lists and ACLs of docs/operations.md and docs/configuration.md, from the code.

    python -m devtools.topicdoc          rewrite them (after changing streams/runtime/topiclist.py)
    python -m devtools.topicdoc --check  exit 1 when a document is out of date

Between each pair of markers below a document holds what `cs-relay topics` (or
`cs-relay acls`) prints for the default settings; tests/test_topics_cli.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.cli import acls, topics
from streams.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCUMENTS = (DOCS / "operations.md", DOCS / "configuration.md")


def _marker(name: str, command: str) -> tuple[str, str]:
    return (
        f"<!-- {name}: written by `python -m devtools.topicdoc` from `{command}`; edit the code, not this -->",
        f"<!-- end of {name} -->",
    )


def sections() -> dict[tuple[str, str], str]:
    """{(begin marker, end marker): the command's output for the default settings}."""
    settings = Settings.from_env({})
    return {
        _marker("topics", "cs-relay topics"): "$ cs-relay topics\n" + topics.render(settings),
        _marker("acls", "cs-relay acls"): "$ cs-relay acls\n" + acls.render(settings, acls.DEFAULT_PRINCIPALS),
    }


def rewritten(document: str) -> str:
    """`document` with the text between each pair of markers it holds written anew."""
    for (begin, end), text in sections().items():
        if begin not in document:
            continue
        start, stop = document.index(begin), document.index(end) + len(end)
        document = document[:start] + "\n".join([begin, "", "```text", text, "```", "", end]) + document[stop:]
    return document


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
