"""The `cs-relay` commands that ask a running worker over HTTP: `inspect` (a user's,
group's or waiting events' state), `status` (deliveries and lag) and `preview` (what
each destination would receive now; `--offline`: no worker, empty state)."""

from __future__ import annotations

import argparse

from streams.cli.options import worker_http, worker_http_options


def add_inspect(sub: argparse._SubParsersAction) -> None:
    inspect = sub.add_parser("inspect", help="a user's, group's or waiting events' state, from a running worker")
    inspect.add_argument("what", choices=["user", "group", "pending"])
    inspect.add_argument("id", help="userId (or anonymousId) for user and pending, groupId for group")
    worker_http_options(inspect)
    inspect.set_defaults(run=_inspect)


def add_status(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="per destination: delivered, retrying, pending, dead-lettered; consumer lag")
    worker_http_options(status)
    status.set_defaults(run=_status)


def add_preview(sub: argparse._SubParsersAction) -> None:
    preview = sub.add_parser(
        "preview", help="what each destination would receive for Segment messages now; nothing is sent or written"
    )
    preview.add_argument("file", help="Segment messages: a JSON object, an array, or JSON lines; - for stdin")
    preview.add_argument("--offline", action="store_true", help="empty state and this shell's settings, no worker")
    worker_http_options(preview)
    preview.set_defaults(run=_preview)


def _inspect(args: argparse.Namespace) -> int:
    from streams.cli.inspection import inspect

    url, token = worker_http(args)
    return inspect(args.what, args.id, url=url, token=token, compact=args.json)


def _status(args: argparse.Namespace) -> int:
    from streams.cli.inspection import status

    url, token = worker_http(args)
    return status(url=url, token=token, as_json=args.json)


def _preview(args: argparse.Namespace) -> int:
    from streams.cli.preview import run

    url, token = ("", "") if args.offline else worker_http(args)
    return run(args.file, use_worker=not args.offline, url=url, token=token, as_json=args.json)
