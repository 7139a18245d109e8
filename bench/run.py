"""`python -m bench` (`make bench`): cs-relay's throughput, latency, memory and state size.

One run, on this machine:

1. a local Kafka broker (`LocalKafka`, unless KAFKA_BOOTSTRAP_SERVERS is set) and both
   mock partners (in this process, on free ports); fresh topics and app id for the run;
   a **warm-up** worker delivers one group call per group (`bench.mix`), then stops;
2. **backlog**: `--events` Segment calls (the mix of `bench.mix`) are produced to the
   input topic, keyed by user, while no worker runs; then a worker process
   (`python -m streams.cli worker`, restarting on the warm-up's state) drains them.
   Throughput is the events delivered divided by the time from the first request a
   partner received to the moment the last event had reached every partner that
   takes it;
3. **paced**: with the worker warm, `--paced-events` more calls (none of which has to
   wait for a group call) are produced at a steady `--paced-rate` (default: half the
   backlog throughput). Latency is produce time (each message's `timestamp`) to the
   partner's `received_at`, per request;
4. the worker's peak memory (VmHWM) is read, the worker is stopped, and its data dir
   (RocksDB tables) is measured;
5. the ceilings (`bench.baselines`): a bare consumer reading the same input topic, and
   a bare HTTP client sending the same requests to the mocks.

Results go to `bench/results/<stamp>.json` with two charts beside it; work files
(broker data, the worker's data dir and log) to `var/bench/<stamp>/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import aggregation, scenarios
from bench.charts import draw
from bench.harness import REPO, reset_mocks, shown
from bench.interrupt import INTERRUPTED, Interrupt
from bench.phases import phases
from bench.report import machine_info, report, summary_a
from bench.scenario_a import Bench
from bench.suite import Suite
from streams import kafkaconn
from streams.core import mappingfile
from streams.destinations import REGISTRY
from streams.settings import Settings
from streams.testing.mocks import start_mocks

DEFAULT_MAX_IN_FLIGHT = Settings().max_in_flight


def build_parser() -> argparse.ArgumentParser:
    """`python -m bench`'s options (docs/benchmarks.md's table of flags lists them)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--scenarios",
        default=",".join(scenarios.DEFAULT),
        help="which scenarios to run, comma-separated: a default mix, b attributable track backlog (cs-relay, "
        "naive relay on asyncio and on uvloop, bare client), c 50 ms partner latency, d heavy vs light users, "
        "e one worker vs two, f state after --million-users users (not in the default), g one user's burst "
        "of 6,000 and 12,000 tracks before 200 other users' (50 ms); see bench/scenarios.py",
    )
    add("--scale", type=float, default=1.0, help="multiplies the users and tracks of scenarios b to e and g's bursts")
    add("--million-users", type=int, default=1_000_000, help="distinct users of scenario f")
    add(
        "--repeat",
        type=int,
        default=3,
        help="rounds of scenario b (cs-relay and the naive relay, each round in the other order) and of scenario "
        "c's cs-relay drain; the median round is reported, every round kept (the machine's noise moves one "
        "drain's rate by 10-20 %%)",
    )
    add(
        "--profile",
        action="store_true",
        help="py-spy each relay's worker while it drains scenario b, and cs-relay's first drain of c",
    )
    add("--events", type=int, default=25_000, help="scenario a: calls in the backlog phase, after the warm-up")
    add("--paced-events", type=int, default=2_500, help="scenario a: calls in the paced phase (latency)")
    add("--paced-rate", type=float, default=0.0, help="calls/s in the paced phase; 0: half the backlog throughput")
    add("--users", type=int, default=10_000, help="distinct users")
    add("--groups", type=int, default=500, help="groups (accounts); the warm-up introduces each with a group call")
    add(
        "--early-share",
        type=float,
        default=0.5,
        help="share of the users whose first group call comes late that send calls before it (they must wait)",
    )
    add("--payload-bytes", type=int, default=0, help="extra characters in each call's properties or traits")
    add("--partitions", type=int, default=8, help="CS_RELAY_TOPIC_PARTITIONS for the run's topics")
    add(
        "--by-user-hop",
        action="store_true",
        help="run cs-relay without CS_RELAY_INPUT_KEYED_BY_USER: every call copied to the by-user topic first "
        "(the bench's input is keyed by user, so by default the worker routes it in place)",
    )
    add(
        "--http-concurrency",
        type=int,
        default=int(os.environ.get("CS_RELAY_MAX_IN_FLIGHT") or DEFAULT_MAX_IN_FLIGHT),
        help="requests in flight per partner in the HTTP ceiling (default: the worker's CS_RELAY_MAX_IN_FLIGHT)",
    )
    add(
        "--aggregate",
        default="off",
        metavar="WINDOW",
        help="scenario a: also drain its backlog with aggregate = WINDOW for both partners (a fresh app id) and "
        "report partner requests per 1,000 events with and without; the pass waits for the windows to close, "
        "so use a short window such as 10s (the report adds the one-window figure, what 1h gives)",
    )
    add("--seed", type=int, default=1, help="seed of the mix")
    add("--timeout", type=float, default=900.0, help="seconds each phase may take before the run gives up")
    add("--results-dir", type=Path, default=REPO / "bench" / "results")
    add("--work-dir", type=Path, default=REPO / "var" / "bench", help="broker data, worker data dir and log")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.events < 1 or args.paced_events < 0 or args.users < 1 or args.partitions < 1:
        parser.error("--events, --users and --partitions must be positive, --paced-events not negative")
    try:
        args.scenarios = scenarios.parse_choice(args.scenarios)
        scenarios.plans(args.scale, args.million_users)
        phases(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        args.aggregate_s = mappingfile.duration(args.aggregate)
    except ValueError as exc:
        parser.error(f"--aggregate: {exc}")
    if args.aggregate_s and ("a" not in args.scenarios or args.aggregate_s + 30 > args.timeout):
        parser.error("--aggregate needs scenario a and a --timeout longer than the window plus 30 s")
    return args


async def run_all(
    args: argparse.Namespace, bootstrap: str, stamp: str, work: Path, security: kafkaconn.KafkaSecurity
) -> tuple[dict[str, Any], list[float]]:
    """Every chosen scenario on one set of mocks (and the caller's broker)."""

    mocks = await start_mocks("127.0.0.1", {p.key: 0 for p in REGISTRY})
    try:
        results: dict[str, Any] = {}
        latencies: list[float] = []
        summaries: dict[str, dict[str, Any]] = {}
        if "a" in args.scenarios:
            print(f"scenario a: {scenarios.TITLES['a']}", flush=True)
            started = time.monotonic()
            results, latencies = await Bench(args, bootstrap, stamp, work, security).run(mocks)
            summaries["a"] = summary_a(results)
            summaries["a"].update(
                title=scenarios.TITLES["a"],
                target=scenarios.TARGETS["a"],
                wall_seconds=round(time.monotonic() - started, 1),
            )
            print("\n".join(scenarios.summary_lines(summaries)), flush=True)
            reset_mocks(mocks)
            if args.aggregate_s:
                print(f"scenario a again, aggregate = {args.aggregate!r}", flush=True)
                again = Bench(args, bootstrap, stamp, work / "aggregate", security)
                results["aggregation"] = await again.run_aggregated(mocks, results["cs_relay"]["burst"]["requests"])
                print("\n".join(aggregation.report_lines(results["aggregation"])), flush=True)
                reset_mocks(mocks)
        summaries.update(await Suite(args, bootstrap, stamp, work, security, mocks).run(args.scenarios))
        if "settings" not in results:
            results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        results["scenarios"] = summaries
        return results, latencies
    finally:
        await mocks.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt = Interrupt()
    try:
        return _main(args, interrupt)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    finally:
        interrupt.restore()


def _main(args: argparse.Namespace, interrupt: Interrupt) -> int:
    # A topic just created has no leader for a moment; aiokafka retries and says so.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    started = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    if load_before[0] > 0.5:
        print(f"note: the machine is busy (load average {load_before[0]}): the figures will be lower", flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = args.work_dir / stamp
    work.mkdir(parents=True, exist_ok=True)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    kafka = None
    security = kafkaconn.KafkaSecurity()
    if bootstrap:
        kafka_version = f"external ({bootstrap})"
        security = Settings.from_env().kafka_security  # the external broker's TLS / SASL, if any
    else:
        from streams.localkafka import LocalKafka

        kafka = LocalKafka(port=0, data_dir=work / "kafka")
        print(f"starting a local Kafka {kafka.version} broker", flush=True)
        kafka.start(timeout=180)
        bootstrap, kafka_version = kafka.bootstrap_servers, kafka.version
    try:
        results, latencies = interrupt.run(run_all(args, bootstrap, stamp, work, security))
    finally:
        if kafka is not None:
            kafka.stop()
    results = {
        "run": {
            "stamp": stamp,
            "wall_seconds": round(time.monotonic() - started, 1),
            "work_dir": shown(work),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "machine": machine_info(kafka_version),
        **results,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.results_dir / stamp
    results["charts"] = [p.name for p in draw(results, latencies, prefix)]
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(
        f"results: {', '.join([str(prefix.with_suffix('.json')), *results['charts']])}; "
        f"took {results['run']['wall_seconds']:.0f} s"
    )
    complete = "cs_relay" not in results or (
        results["cs_relay"]["burst"]["complete"] and results["cs_relay"]["paced"]["complete"]
    )
    complete = complete and results.get("aggregation", {}).get("complete", True)
    complete = complete and all(
        figures.get("complete", True)
        for scenario in results.get("scenarios", {}).values()
        for value in scenario.values()
        for figures in (value if isinstance(value, list) else [value])
        if isinstance(figures, dict)
    )
    return 0 if complete else 1
