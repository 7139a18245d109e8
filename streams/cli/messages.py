"""The `cs-relay` commands that put Segment messages on the input topic or deal with
what could not be delivered: `send` (a JSON-lines file, with progress) and `dlq list` /
`dlq replay` (the dead letters: show them, send them back)."""

from __future__ import annotations

import argparse
from pathlib import Path

from streams.cli.failures import run_with_kafka
from streams.cli.options import positive
from streams.settings import Settings


def add_send(sub: argparse._SubParsersAction) -> None:
    send = sub.add_parser("send", help="produce a JSON-lines file of Segment messages to the input topic")
    send.add_argument("file", type=Path)
    send.add_argument(
        "--in-flight",
        type=positive,
        default=None,
        metavar="N",
        help="records sent but not yet acknowledged, at most (default 5000): bounds memory",
    )
    send.set_defaults(run=_send)


def add_dlq(sub: argparse._SubParsersAction) -> None:
    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="show dead letters: reason, time, a short preview")
    dlq_list.add_argument("--limit", type=int, default=50)
    dlq_list.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: reason, stage, destination, time, source, preview",
    )
    dlq_list.set_defaults(run=_dlq_list)
    replay = dlq_sub.add_parser("replay", help="send dead letters back to the input topic")
    replay.add_argument("--reason", default=None, help="only dead letters with this reason")
    replay.add_argument(
        "--batch-size",
        type=positive,
        default=500,
        metavar="N",
        help="dead letters sent before their acknowledgements are awaited (default 500)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="list the dead letters that would be replayed, and send nothing"
    )
    replay.set_defaults(run=_dlq_replay)


def _send(args: argparse.Namespace) -> int:
    from streams.ops.producer import send_file

    settings = Settings.from_env()
    window = {"in_flight": args.in_flight} if args.in_flight else {}
    return run_with_kafka(
        send_file(
            args.file,
            settings.kafka_bootstrap_servers,
            settings.input_topic,
            **window,
            security=settings.kafka_security,
        ),
        settings.kafka_bootstrap_servers,
    )


def _dlq_list(args: argparse.Namespace) -> int:
    from streams.ops.dlq import list_dead_letters

    settings = Settings.from_env()
    return run_with_kafka(
        list_dead_letters(settings, limit=args.limit, as_json=args.json), settings.kafka_bootstrap_servers
    )


def _dlq_replay(args: argparse.Namespace) -> int:
    from streams.ops.dlq import replay_dead_letters

    settings = Settings.from_env()
    return run_with_kafka(
        replay_dead_letters(settings, reason=args.reason, batch_size=args.batch_size, dry_run=args.dry_run),
        settings.kafka_bootstrap_servers,
    )
