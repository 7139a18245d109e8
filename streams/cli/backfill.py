"""`cs-relay backfill`: the command line of `streams.ops.backfill` (options, the start-up
checks, progress on standard error, the closing summary on standard output). Exit 0
when the span was handled, 1 when the partner kept failing (run it again to go on), 2
when it could not start (a bad option, the worker or Kafka unreachable)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import datetime
from typing import Any

from streams.cli.failures import CommandFailed, run_with_kafka
from streams.core.backfilled import RecordFull
from streams.destinations import REGISTRY
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "backfill", help="deliver the input topic's messages of a span of time to one destination, with today's state"
    )
    parser.add_argument("--destination", required=True, choices=[p.key for p in REGISTRY])
    parser.add_argument("--since", required=True, help="ISO 8601 (2026-12-01, 2026-12-01T08:00:00Z) or 90m, 24h, 7d")
    parser.add_argument("--until", default=None, help="the same forms; default: the end of the topic at start")
    parser.add_argument("--dry-run", action="store_true", help="count what would be sent; send and record nothing")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second at most (default: no limit)")
    parser.add_argument(
        "--url", default=None, help="a worker, for today's state (default http://CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streams.ops.backfill import parse_time

    try:
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"cs-relay backfill: {exc}", file=sys.stderr)
        return 2
    if until is not None and until <= since:
        print("cs-relay backfill: --until must come after --since", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    if not settings.destinations[args.destination].enabled:
        plugin = next(p for p in REGISTRY if p.key == args.destination)
        print(
            f"cs-relay backfill: {args.destination} is not enabled in this shell: {plugin.enable_hint}", file=sys.stderr
        )
        return 2
    if args.rate:
        own: Any = settings.destinations[args.destination]
        rated = {**settings.destinations, args.destination: dataclasses.replace(own, rate_limit=args.rate)}
        settings = dataclasses.replace(settings, destinations=rated)
    return run_with_kafka(_run(settings, args, since, until), settings.kafka_bootstrap_servers)


async def _run(settings: Settings, args: argparse.Namespace, since: datetime, until: datetime | None) -> int:
    from streams.ops.backfill import BackfillStopped, StateUnavailable, backfill, open_span
    from streams.ops.backfillstate import TodaysState
    from streams.ops.webserve import client_url
    from streams.runtime.delivery import PartnerClient
    from streams.runtime.wiring import clients, destinations

    destination = next(d for d in destinations(settings) if d.key == args.destination)
    client: PartnerClient = clients(settings)[args.destination]
    url = args.url or client_url(settings.web_host, settings.web_port)
    state = TodaysState(url, settings.admin_token.reveal())
    try:
        span = await open_span(settings, args.destination, since, until)
    except ValueError as exc:
        await client.close()
        raise CommandFailed(f"cs-relay backfill: {exc}") from None
    for warning in span.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        counts = await backfill(settings, destination, client, span, state, dry_run=args.dry_run)
    except StateUnavailable as exc:
        print(f"cs-relay backfill: today's state: {exc}", file=sys.stderr)
        return 2
    except (BackfillStopped, RecordFull) as exc:
        print(f"cs-relay backfill: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print(f"{args.destination}: {counts.summary(args.dry_run)}")
    return 0
