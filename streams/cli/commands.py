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
from pathlib import Path

from streams import __version__, eventloop
from streams.cli.failures import CommandFailed, run_with_kafka
from streams.destinations import REGISTRY
from streams.ports import Wanted, port_problem
from streams.settings import Settings, SettingsError


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

    kafka = sub.add_parser("kafka", help="run a local single-node Apache Kafka broker (KRaft)")
    kafka.add_argument("--port", type=int, default=9092)
    kafka.add_argument("--data-dir", type=Path, default=None)
    kafka.add_argument(
        "--security",
        choices=["plaintext", "sasl_ssl"],
        default="plaintext",
        help="sasl_ssl: a TLS listener with SASL users (PLAIN, SCRAM); prints the client settings",
    )
    kafka.set_defaults(run=_kafka)

    mocks = sub.add_parser(
        "mocks", help="run every destination's imitation (" + ", ".join(p.name for p in REGISTRY) + ")"
    )
    mocks.add_argument("--host", default="127.0.0.1")
    _mock_port_options(mocks)
    mocks.set_defaults(run=_mocks)

    worker = sub.add_parser("worker", help="run the Faust worker (configured by environment variables)")
    worker.set_defaults(run=_worker)

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

    send = sub.add_parser("send", help="produce a JSON-lines file of Segment messages to the input topic")
    send.add_argument("file", type=Path)
    send.add_argument(
        "--in-flight",
        type=_positive,
        default=None,
        metavar="N",
        help="records sent but not yet acknowledged, at most (default 5000): bounds memory",
    )
    send.set_defaults(run=_send)

    ingest = sub.add_parser("ingest", help="serve Segment's HTTP Tracking API and produce the calls to the input topic")
    ingest.add_argument("--host", default="127.0.0.1")
    ingest.add_argument("--port", type=int, default=8088)
    ingest.set_defaults(run=_ingest)

    dev = sub.add_parser("dev", help="local Kafka, mocks and workers together; Ctrl-C stops all")
    dev.add_argument("--demo", action="store_true", help="send the bundled sample traffic and show what arrived")
    dev.add_argument("--exit", action="store_true", help="with --demo: stop everything after the summary")
    dev.add_argument("--kafka-port", type=int, default=9092, help="0 picks a free port")
    _mock_port_options(dev)
    dev.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes (data var/dev/worker-{i}, web port 6066+i, log var/dev/worker-{i}.log)",
    )
    dev.set_defaults(run=_dev)

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
        type=_positive,
        default=500,
        metavar="N",
        help="dead letters sent before their acknowledgements are awaited (default 500)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="list the dead letters that would be replayed, and send nothing"
    )
    replay.set_defaults(run=_dlq_replay)

    inspect = sub.add_parser("inspect", help="a user's, group's or waiting events' state, from a running worker")
    inspect.add_argument("what", choices=["user", "group", "pending"])
    inspect.add_argument("id", help="userId (or anonymousId) for user and pending, groupId for group")
    _worker_http_options(inspect)
    inspect.set_defaults(run=_inspect)
    status = sub.add_parser("status", help="per destination: delivered, retrying, pending, dead-lettered; consumer lag")
    _worker_http_options(status)
    status.set_defaults(run=_status)

    mappings = sub.add_parser("mappings", help="the per-destination mapping file (CS_RELAY_MAPPINGS, docs/mappings.md)")
    mappings_sub = mappings.add_subparsers(dest="mappings_command", required=True)
    mappings_check = mappings_sub.add_parser(
        "check", help="validate a mapping file (exit 1 naming file:line and key); show its effect on sample calls"
    )
    mappings_check.add_argument("file")
    mappings_check.set_defaults(run=_mappings_check)

    preview = sub.add_parser(
        "preview", help="what each destination would receive for Segment messages now; nothing is sent or written"
    )
    preview.add_argument("file", help="Segment messages: a JSON object, an array, or JSON lines; - for stdin")
    preview.add_argument("--offline", action="store_true", help="empty state and this shell's settings, no worker")
    _worker_http_options(preview)
    preview.set_defaults(run=_preview)
    from streams.cli import acls, backfill, check, topics  # each adds its own subcommand

    for command in (topics, acls, check, backfill):
        command.add_parser(sub)
    return parser


def _mock_port_options(parser: argparse.ArgumentParser) -> None:
    """`--{option}-port` for each registered destination's mock."""
    for p in REGISTRY:
        parser.add_argument(
            f"--{p.mock.option}-port",
            type=int,
            default=p.mock.port,
            dest=f"port_{p.key}",
            help=f"the {p.name} mock's port (default {p.mock.port})",
        )


def _mock_ports(args: argparse.Namespace) -> dict[str, int]:
    return {p.key: getattr(args, f"port_{p.key}") for p in REGISTRY}


def _worker_http_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the worker (default http://CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT)")
    parser.add_argument("--json", action="store_true", help="compact JSON on one line, for scripts")


def _kafka(args: argparse.Namespace) -> int:
    from streams.localkafka import run_kafka

    return run_kafka(args.port, args.data_dir, args.security)


def _mocks(args: argparse.Namespace) -> int:
    from streams.testing.mocks import run_mocks

    ports = _mock_ports(args)
    _free(*(Wanted(port, args.host, f"the {key} mock", f"--{_option(key)}-port") for key, port in ports.items()))
    run_mocks(args.host, ports)
    return 0


def _option(key: str) -> str:
    return next(p.mock.option for p in REGISTRY if p.key == key)


def _free(*wanted: Wanted) -> None:
    """One line and exit 2 when a port to listen on is taken, before anything waits."""
    problem = port_problem(wanted)
    if problem:
        raise CommandFailed(problem)


def _worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()  # fail fast, with the variable's name, before Faust starts
    _free(Wanted(settings.web_port, settings.web_host, "the worker's web server", "CS_RELAY_WEB_PORT"))
    from streams.runtime.topiclist import WORKER
    from streams.runtime.topics import TopicProblem, ensure_topics

    try:
        run_with_kafka(ensure_topics(settings, WORKER), settings.kafka_bootstrap_servers)
    except TopicProblem as exc:
        raise CommandFailed(str(exc)) from None
    from streams.runtime.app import app

    # After `faust` is imported (it applies FAUST_LOOP), before Faust's worker makes its loop.
    eventloop.select(settings.event_loop)
    sys.argv = [
        "cs-relay",
        *(["--quiet"] if settings.log_format == "json" else []),  # no banner between JSON lines
        "worker",
        "--loglevel",
        settings.log_level,
        # The web server's host, port and bind address are the app's own settings
        # (streams.runtime.relayapp): given again here, Faust would set its canonical URL
        # a second time, with an AlreadyConfiguredWarning at every start.
    ]
    app.main()
    return 0


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


def _config(args: argparse.Namespace) -> int:
    """The effective settings by variable, or every bad variable (exit 1); with `--url`,
    a running worker's."""
    import json

    from streams.settingsview import document, render

    if args.url is not None:
        from streams.cli.inspection import worker_config

        url, token = _worker_http(args)
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


def _ingest(args: argparse.Namespace) -> int:
    from streams.ops.ingest import run_ingest

    try:
        return run_ingest(Settings.from_env(), args.host, args.port)
    except OSError as exc:  # the address is taken, or not this machine's
        # asyncio's strerror repeats the address: "error while attempting to bind on address (...): reason"
        reason = (exc.strerror or str(exc)).rsplit("): ", 1)[-1]
        raise CommandFailed(f"cannot listen on {args.host}:{args.port}: {reason}") from None


def _dev(args: argparse.Namespace) -> int:
    from devtools.dev import run_dev

    return run_dev(
        demo=args.demo,
        exit_after=args.exit,
        kafka_port=args.kafka_port,
        workers=args.workers,
        mock_ports=_mock_ports(args),
    )


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


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


def _worker_http(args: argparse.Namespace) -> tuple[str, str]:
    from streams.ops.webserve import client_url

    settings = Settings.from_env()
    return args.url or client_url(settings.web_host, settings.web_port), settings.admin_token.reveal()


def _inspect(args: argparse.Namespace) -> int:
    from streams.cli.inspection import inspect

    url, token = _worker_http(args)
    return inspect(args.what, args.id, url=url, token=token, compact=args.json)


def _status(args: argparse.Namespace) -> int:
    from streams.cli.inspection import status

    url, token = _worker_http(args)
    return status(url=url, token=token, as_json=args.json)


def _preview(args: argparse.Namespace) -> int:
    from streams.cli.preview import run

    url, token = ("", "") if args.offline else _worker_http(args)
    return run(args.file, use_worker=not args.offline, url=url, token=token, as_json=args.json)


def _mappings_check(args: argparse.Namespace) -> int:
    from streams.cli.mappingcheck import check

    return check(args.file)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
