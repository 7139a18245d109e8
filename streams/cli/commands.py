"""`cs-relay`: the command line.

    cs-relay kafka   [--port 9092] [--data-dir DIR]      a local Apache Kafka broker
    cs-relay mocks   [--{destination}-port PORT ...]     every destination's imitation
    cs-relay worker                                      the Faust worker (env-configured)
    cs-relay config  [--json] [--url [URL]]              the settings by variable (a running worker's), secrets masked
    cs-relay send FILE [--in-flight N]                   produce a JSON-lines file, with progress
    cs-relay ingest  [--host 127.0.0.1] [--port 8088]    Segment HTTP API -> the input topic
    cs-relay dev     [--demo] [--exit] [--workers N]     Kafka + mocks + N workers together
                     [--kafka-port 9092] [--{destination}-port PORT ...]
    cs-relay dlq list [--json] | dlq replay [--reason R] inspect and replay dead letters
    cs-relay inspect user|group|pending ID [--json]      state, from a running worker
    cs-relay status  [--json]                            deliveries and lag of a running worker
    cs-relay mappings check FILE                         validate a mapping file, show its effect
    cs-relay topics  [--json] [--create]                 every topic cs-relay uses; create the missing
    cs-relay acls    [--form kafka-acls|confluent|aiven] the Kafka ACLs of the worker, ingest and CLI
    cs-relay check                                       before going live: Kafka, topics, destinations
    cs-relay preview FILE|- [--offline] [--json]         what each destination would receive now
    cs-relay backfill --destination D --since T ...      a span of the input topic to one destination

Each subcommand imports only what it needs: `streams.runtime.app` (which reads the whole
configuration) is imported by `worker` alone.

Exit status: 0 done; 1 `config` found bad variables, or a worker answered an error;
2 a command could not run: bad configuration, Kafka or the worker unreachable (one line
on standard error, `streams.cli.failures`); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streams import __version__
from streams.cli import configuration, messages, queries, servers
from streams.cli.failures import CommandFailed
from streams.settings import SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except SettingsError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    except CommandFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cs-relay", description="Segment messages to customer-success destinations")
    parser.add_argument("--version", action="version", version=f"cs-relay {__version__}")
    sub = parser.add_subparsers(dest="command")
    # In this order in `cs-relay --help`.
    servers.add_kafka(sub)
    servers.add_mocks(sub)
    servers.add_worker(sub)
    configuration.add_config(sub)
    messages.add_send(sub)
    servers.add_ingest(sub)
    servers.add_dev(sub)
    messages.add_dlq(sub)
    queries.add_inspect(sub)
    queries.add_status(sub)
    configuration.add_mappings(sub)
    queries.add_preview(sub)
    from streams.cli import acls, backfill, check, topics  # each adds its own subcommand

    for command in (topics, acls, check, backfill):
        command.add_parser(sub)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
