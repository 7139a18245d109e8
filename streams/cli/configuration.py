"""The `cs-relay` commands about configuration: `config` (the settings by variable,
secrets masked, or every bad variable with exit 1; a running worker's with `--url`)
and `mappings check` (a mapping file validated, and its effect on sample calls)."""

from __future__ import annotations

import argparse
import sys

from streams.cli.options import worker_http


def add_config(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser(
        "config", help="print the effective settings, secrets masked; exit 1 naming each bad variable"
    )
    config.add_argument("--json", action="store_true", help="one JSON document instead of name = value lines")
    config.add_argument(
        "--url",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="a running worker's settings instead of this shell's "
        "(default URL http://CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT; its admin token from CS_RELAY_ADMIN_TOKEN)",
    )
    config.set_defaults(run=_config)


def add_mappings(sub: argparse._SubParsersAction) -> None:
    mappings = sub.add_parser("mappings", help="the per-destination mapping file (CS_RELAY_MAPPINGS, docs/mappings.md)")
    mappings_sub = mappings.add_subparsers(dest="mappings_command", required=True)
    mappings_check = mappings_sub.add_parser(
        "check", help="validate a mapping file (exit 1 naming file:line and key); show its effect on sample calls"
    )
    mappings_check.add_argument("file")
    mappings_check.set_defaults(run=_mappings_check)


def _config(args: argparse.Namespace) -> int:
    """The effective settings by variable, or every bad variable (exit 1); with `--url`,
    a running worker's."""
    import json

    from streams.settingsview import document, render

    if args.url is not None:
        from streams.cli.inspection import worker_config

        url, token = worker_http(args)
        return worker_config(url=url, token=token, as_json=args.json)
    doc, errors = document()
    if errors:
        for problem in errors:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(errors)} invalid setting(s)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"source": "environment", **doc}, indent=2, ensure_ascii=False))
    else:
        print(render(doc, THIS_SHELL))
    return 0


THIS_SHELL = (
    "The settings this shell's environment gives a worker started here (not a running worker's: "
    "`cs-relay config --url [URL]` shows those)"
)


def _mappings_check(args: argparse.Namespace) -> int:
    from streams.cli.mappingcheck import check

    return check(args.file)
