"""The `cs-relay` commands that run a process until it is stopped: `kafka` (a local
broker), `mocks` (every destination's imitation), `worker` (the Faust worker), `ingest`
(Segment's HTTP API in front of the input topic) and `dev` (all of them together). A
port to listen on that is taken is one line and exit 2, before anything waits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams import eventloop, gcpolicy, mallocarenas
from streams.cli.failures import CommandFailed, run_with_kafka
from streams.cli.options import mock_port_options, mock_ports, positive
from streams.destinations import REGISTRY
from streams.ports import Wanted, port_problem
from streams.settings import Settings


def add_kafka(sub: argparse._SubParsersAction) -> None:
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


def add_mocks(sub: argparse._SubParsersAction) -> None:
    mocks = sub.add_parser(
        "mocks", help="run every destination's imitation (" + ", ".join(p.name for p in REGISTRY) + ")"
    )
    mocks.add_argument("--host", default="127.0.0.1")
    mock_port_options(mocks)
    mocks.set_defaults(run=_mocks)


def add_worker(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="run the Faust worker (configured by environment variables)")
    worker.set_defaults(run=_worker)


def add_ingest(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser("ingest", help="serve Segment's HTTP Tracking API and produce the calls to the input topic")
    ingest.add_argument("--host", default="127.0.0.1")
    ingest.add_argument("--port", type=int, default=8088)
    ingest.set_defaults(run=_ingest)


def add_dev(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help="local Kafka, mocks and workers together; Ctrl-C stops all")
    dev.add_argument("--demo", action="store_true", help="send the bundled sample traffic and show what arrived")
    dev.add_argument("--exit", action="store_true", help="with --demo: stop everything after the summary")
    dev.add_argument("--kafka-port", type=int, default=9092, help="0 picks a free port")
    mock_port_options(dev)
    dev.add_argument(
        "--workers",
        type=positive,
        default=1,
        metavar="N",
        help="worker processes (data var/dev/worker-{i}, web port 6066+i, log var/dev/worker-{i}.log)",
    )
    dev.set_defaults(run=_dev)


def _kafka(args: argparse.Namespace) -> int:
    from streams.localkafka import run_kafka

    return run_kafka(args.port, args.data_dir, args.security)


def _mocks(args: argparse.Namespace) -> int:
    from streams.testing.mocks import run_mocks

    ports = mock_ports(args)
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
    mallocarenas.cap()  # before any thread allocates (streams/mallocarenas.py)
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
    gcpolicy.settle()  # the start-up's objects out of every collection (streams/gcpolicy.py)
    app.main()
    return 0


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
        mock_ports=mock_ports(args),
    )
