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
import asyncio
import concurrent.futures
import itertools
import json
import logging
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import aggregation, mix, scenarios, stats
from bench.baselines import PartnerJobs, consume_ceiling, run_http_ceiling
from streams import kafkaconn
from streams.core import mappingfile
from streams.core.decision import PartnerRequest
from streams.destinations import REGISTRY, plugin
from streams.ops.dlq import read_dead_letters
from streams.ops.producer import user_key
from streams.ops.webserve import free_port
from streams.runtime.topics import ensure_topics
from streams.settings import Settings
from streams.testing.mocks import MockServers, start_mocks, worker_partner_env
from streams.testing.recorder import RECORDS_KEY

REPO = Path(__file__).resolve().parent.parent
CLIENTSUCCESS, CSB = "clientsuccess", "customersuccessbox"
# The destinations the benchmark's scenarios are about (others in the registry are not
# enabled in its worker), and which of them each call type reaches.
MEASURED = (CLIENTSUCCESS, CSB)
PARTNERS_OF = {"identify": (CSB,), "group": (CSB,), "track": (CLIENTSUCCESS, CSB), "page": (CLIENTSUCCESS, CSB)}
DEFAULT_MAX_IN_FLIGHT = Settings().max_in_flight
READY_LINE = "[^Worker]: Ready"  # Faust's log line once every service of the worker runs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--scenarios",
        default=",".join(scenarios.DEFAULT),
        help="which scenarios to run, comma-separated: a default mix, b attributable track backlog (cs-relay, "
        "naive relay, bare client), c 50 ms partner latency, d heavy vs light users, e one worker vs two, "
        "f state after --million-users users (not in the default); see bench/scenarios.py",
    )
    add("--scale", type=float, default=1.0, help="multiplies the users and tracks of scenarios b to e")
    add("--million-users", type=int, default=1_000_000, help="distinct users of scenario f")
    add("--profile", action="store_true", help="py-spy each relay's worker while it drains scenario b")
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
    args = parser.parse_args(argv)
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


# ------------------------------------------------------------------ the worker process


@dataclass
class Worker:
    """One `python -m streams.cli worker` process, its output in `log`."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, env: dict[str, str], log: Path, command: Sequence[str] | None = None) -> Worker:
        """Start `command` (a cs-relay worker unless given: the naive relay's, say)."""
        command = list(command or [sys.executable, "-m", "streams.cli", "worker"])
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        return cls(process, log)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the worker exited with {self.process.returncode}; the end of {self.log}:\n{tail}")

    async def until_logged(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not log {text!r} within {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(0.2)

    def cpu_seconds(self) -> float:
        text = Path(f"/proc/{self.process.pid}/stat").read_text()
        return stats.proc_stat_cpu_seconds(text, os.sysconf("SC_CLK_TCK"))

    async def sample_cpu(self, samples: list[tuple[int, float]], every: float = 0.5) -> None:
        """Append (time µs, CPU seconds) every `every` seconds while the process runs."""
        while self.process.poll() is None:
            try:
                samples.append((time.time_ns() // 1000, self.cpu_seconds()))
            except OSError:
                return
            await asyncio.sleep(every)

    def memory_kb(self) -> dict[str, int]:
        return stats.proc_status_kb(Path(f"/proc/{self.process.pid}/status").read_text())

    async def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, a graceful stop (the loop keeps serving the mocks meanwhile: the
        worker may finish deliveries), then SIGKILL if it takes longer than `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 30)


async def _until_quiet(samples: list[tuple[int, float]], cores: float = 0.1, timeout: float = 30.0) -> None:
    """Until the worker used less than `cores` over the last second of CPU samples (or
    `timeout` seconds passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = [s for s in samples if s[0] >= samples[-1][0] - stats.US] if samples else []
        if len(recent) >= 2 and stats.cpu_cores(recent, recent[0][0], recent[-1][0]) < cores:
            return
        await asyncio.sleep(0.25)


def worker_env(settings: Settings, mocks: MockServers) -> dict[str, str]:
    """The environment of the run's worker: the caller's, with the run's topics, data
    dir and mocks (other CS_RELAY_* tuning passes through)."""
    env = {k: v for k, v in os.environ.items() if k not in kafkaconn.VARIABLES}
    env.update(settings.kafka_security.env())
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        CS_RELAY_APP_ID=settings.app_id,
        CS_RELAY_INPUT_TOPIC=settings.input_topic,
        CS_RELAY_DLQ_TOPIC=settings.dlq_topic,
        CS_RELAY_TOPIC_PARTITIONS=str(settings.topic_partitions),
        # The bench produces its input keyed by user (as `cs-relay send` does).
        CS_RELAY_INPUT_KEYED_BY_USER=str(settings.input_keyed_by_user).lower(),
        CS_RELAY_DATA_DIR=str(settings.data_dir),
        CS_RELAY_WEB_PORT=str(free_port()),
        CS_RELAY_LOG_LEVEL="info",  # the bench waits for Faust's "Ready" line
        PYTHONUNBUFFERED="1",
    )
    env.update(worker_partner_env({key: mocks.urls[key] for key in MEASURED}, mocks.credentials))
    return env


# ------------------------------------------------------------------ what the partners received


class Receipts:
    """Collects, as they come, the benchmark's requests the mocks recorded (the same
    records `GET /_mock/requests` serves, read in-process: polling over HTTP would
    serialise the whole list every time)."""

    def __init__(self, mocks: MockServers) -> None:
        self._records = {key: mocks.apps[key][RECORDS_KEY] for key in MEASURED}
        self._read = {partner: 0 for partner in self._records}
        self.all: list[stats.Receipt] = []
        self.delivered: set[tuple[str, int]] = set()  # (partner, event) answered 2xx

    def collect(self) -> None:
        for partner, records in self._records.items():
            new = records[self._read[partner] :]
            self._read[partner] += len(new)
            for record in new:
                r = stats.receipt(partner, record)
                if r is not None:
                    self.all.append(r)
                    if r.ok:
                        self.delivered.add((partner, r.event_us))

    def records(self, partner: str) -> list[dict[str, Any]]:
        return list(self._records[partner])


@dataclass
class Phase:
    """The calls of one phase and when each was produced (its event id)."""

    name: str
    calls: list[mix.Call]
    produced_us: list[int] = field(default_factory=list)

    def expected(self) -> set[tuple[str, int]]:
        return {(p, us) for call, us in zip(self.calls, self.produced_us, strict=False) for p in PARTNERS_OF[call.type]}


# ------------------------------------------------------------------ the run


@dataclass
class Measured:
    """What the worker did in the measured phases."""

    backlog: dict[str, Any]
    paced: dict[str, Any]
    memory_kb: dict[str, int]
    worker_exit: int | None
    restart_s: float  # the measured worker's start to its first delivery
    started_us: int  # the measured worker's start, the charts' zero
    cpu_samples: list[tuple[int, float]]  # (time µs, the worker's CPU seconds)


class Bench:
    """One run: its own app id and topics on the broker, its data under `work`."""

    def __init__(
        self,
        args: argparse.Namespace,
        bootstrap: str,
        stamp: str,
        work: Path,
        security: kafkaconn.KafkaSecurity | None = None,
    ) -> None:
        self.args = args
        self.stamp = stamp
        self.work = work
        name = f"bench-{stamp.lower()}-{uuid.uuid4().hex[:6]}"
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            kafka_security=security or kafkaconn.KafkaSecurity(),
            input_topic=f"{name}-in",
            dlq_topic=f"{name}-dlq",
            app_id=name,
            data_dir=work / "worker",
            topic_partitions=args.partitions,
            input_keyed_by_user=not args.by_user_hop,
        )
        self._last_us = 0
        self._message_bytes = 0
        self._workers = 0
        self.extra_env: dict[str, str] = {}  # added to the worker's environment

    async def run(self, shared: MockServers | None = None) -> tuple[dict[str, Any], list[float]]:
        """Scenario a; on the `shared` mocks of the run when given (left running)."""
        args, settings = self.args, self.settings
        intro, backlog, paced = phases(args)
        calls = intro.calls + backlog.calls + paced.calls
        mocks = shared or await start_mocks("127.0.0.1", {p.key: 0 for p in REGISTRY})
        try:
            await ensure_topics(settings)
            receipts = Receipts(mocks)
            producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=2)
            await producer.start()
            try:
                await self._create_topics(mocks)
                await self._warm_up(producer, receipts, mocks, intro)
                measured = await self._measure(producer, receipts, mocks, backlog, paced)
            finally:
                await producer.stop()
            state = _disk_usage(settings.data_dir)
            dead_letters = await _count_dead_letters(settings)
            ceilings = await self._ceilings(receipts, mocks, backlog, len(calls))
        finally:
            if shared is None:
                await mocks.close()
        return self._results(calls, receipts, measured, state, dead_letters, ceilings, paced)

    async def _create_topics(self, mocks: MockServers) -> None:
        """Start a worker on the empty input so that Faust creates its changelog topics,
        and stop it once ready. On a fresh cluster Faust's first partition assignment
        can come before a topic it has just created is in the metadata ("Ignoring
        missing topic"): a worker without a changelog's partitions dead-letters every
        event as `routing_error` until its next metadata refresh (docs/operations.md,
        "First start"). Later starts find every topic."""
        worker = self._start_worker(mocks)
        try:
            await worker.until_logged(READY_LINE, self.args.timeout)
        finally:
            await worker.stop()

    async def _warm_up(self, producer: AIOKafkaProducer, receipts: Receipts, mocks: MockServers, intro: Phase) -> None:
        """Introduce every group with a first worker, then stop it: the measured phases
        start from known groups, and the next worker starts from its state on disk."""
        print(f"warm-up: {len(intro.calls):,} group introductions", flush=True)
        await self._produce(producer, intro)
        worker = self._start_worker(mocks)
        try:
            if not await self._until_delivered(receipts, intro, worker):
                raise RuntimeError("the warm-up's group calls were not delivered; see the worker log")
        finally:
            await worker.stop()

    async def _measure(
        self, producer: AIOKafkaProducer, receipts: Receipts, mocks: MockServers, backlog: Phase, paced: Phase
    ) -> Measured:
        print(f"backlog: producing {len(backlog.calls):,} calls, then starting the worker", flush=True)
        await self._produce(producer, backlog)
        started_us = time.time_ns() // 1000
        worker = self._start_worker(mocks)
        cpu_samples: list[tuple[int, float]] = []
        sampler = asyncio.create_task(worker.sample_cpu(cpu_samples))
        try:
            complete = await self._until_delivered(receipts, backlog, worker)
            backlog_figures = {**_phase_figures(receipts.all, backlog, latency=False), "complete": complete}
            backlog_figures["worker_cpu_cores"] = round(
                stats.cpu_cores(cpu_samples, backlog_figures["first_receipt_us"], time.time_ns() // 1000), 2
            )
            paced_figures: dict[str, Any] = {"events": 0, "complete": True}
            if paced.calls:
                # Latency is measured on a worker at rest: what the backlog left it to do
                # (confirming released events, say) would otherwise delay the first paced calls.
                await _until_quiet(cpu_samples)
                rate = self.args.paced_rate or max(1.0, backlog_figures["events_per_second"] / 2)
                print(f"paced: {len(paced.calls):,} calls at {rate:,.0f}/s", flush=True)
                await self._produce(producer, paced, rate)
                complete = await self._until_delivered(receipts, paced, worker)
                paced_figures = {
                    **_phase_figures(receipts.all, paced, latency=True),
                    "rate": round(rate, 1),
                    "complete": complete,
                }
            memory = worker.memory_kb()
        finally:
            sampler.cancel()
            await worker.stop()
        return Measured(
            backlog=backlog_figures,
            paced=paced_figures,
            memory_kb=memory,
            worker_exit=worker.process.returncode,
            restart_s=round((backlog_figures["first_receipt_us"] - started_us) / stats.US, 1),
            started_us=started_us,
            cpu_samples=cpu_samples,
        )

    async def _ceilings(self, receipts: Receipts, mocks: MockServers, backlog: Phase, records: int) -> dict[str, Any]:
        print("ceiling 1: a bare consumer reading the input topic", flush=True)
        consumed = await consume_ceiling(self.settings, self.settings.input_topic, records, self.args.timeout)
        print("ceiling 2: a bare aiohttp client sending the backlog's requests to the mocks", flush=True)
        jobs = _replay_jobs(receipts, backlog, mocks)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            http = await asyncio.get_running_loop().run_in_executor(
                pool, run_http_ceiling, jobs, self.args.http_concurrency
            )
        return {
            "raw_consumer": {
                "records": consumed.count,
                "seconds": round(consumed.seconds, 3),
                "events_per_second": round(consumed.per_second),
            },
            "plain_http": {
                "requests": http.count,
                "ok": http.ok,
                "seconds": round(http.seconds, 3),
                "concurrency_per_partner": self.args.http_concurrency,
                "requests_per_second": round(http.per_second),
            },
        }

    def _results(
        self,
        calls: list[mix.Call],
        receipts: Receipts,
        measured: Measured,
        state: dict[str, Any],
        dead_letters: int,
        ceilings: dict[str, Any],
        paced: Phase,
    ) -> tuple[dict[str, Any], list[float]]:
        users = len({call.user for call in calls})
        backlog = measured.backlog
        settings = {k: (_shown(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
        results: dict[str, Any] = {
            "settings": {
                **settings,
                "shares": dict(mix.DEFAULT_SHARES),
                "app_id": self.settings.app_id,
                "worker_env": {k: v for k, v in os.environ.items() if k.startswith("CS_RELAY_")},
            },
            "mix": {
                "calls": {kind: sum(1 for c in calls if c.type == kind) for kind in PARTNERS_OF},
                "introductions": self.args.groups,
                "early_calls": sum(1 for c in calls if c.early),
                "users": users,
                "mean_message_bytes": round(self._message_bytes / len(calls)),
            },
            "cs_relay": {
                "burst": backlog,
                "paced": measured.paced,
                "restart_to_first_delivery_s": measured.restart_s,
                "worker_peak_rss_mb": round(measured.memory_kb.get("VmHWM", 0) / 1024, 1),
                "worker_rss_at_end_mb": round(measured.memory_kb.get("VmRSS", 0) / 1024, 1),
                "worker_exit_code": measured.worker_exit,
                "state_data_bytes": state["data"],
                "state_data_bytes_by_table": state["by_table"],
                "state_rocksdb_overhead_bytes": state["overhead"],
                "state_data_mb_per_100k_users": round(stats.per_100k_users(state["data"], users) / 2**20, 1),
                "dead_letters": dead_letters,
            },
            "baselines": ceilings,
            "ratios": {
                "throughput_vs_raw_consumer": round(
                    stats.ratio(backlog["events_per_second"], ceilings["raw_consumer"]["events_per_second"]), 4
                ),
                "throughput_vs_plain_http": round(
                    stats.ratio(backlog["requests_per_second"], ceilings["plain_http"]["requests_per_second"]), 4
                ),
            },
            "series": _series(receipts.all, measured, paced),
        }
        # Each paced request, for a look at when the slow ones came (work dir, not results).
        with (self.work / "paced-receipts.csv").open("w") as out:
            out.write("partner,event_us,received_us,status\n")
            for r in receipts.all:
                if _in_phase(r, paced):
                    out.write(f"{r.partner},{r.event_us},{r.received_us},{r.status}\n")
        return results, [r.latency_ms for r in receipts.all if r.ok and _in_phase(r, paced)]

    def _start_worker(self, mocks: MockServers) -> Worker:
        self._workers += 1
        env = {**worker_env(self.settings, mocks), **self.extra_env}
        return Worker.start(env, self.work / f"worker-{self._workers}.log")

    async def run_aggregated(self, mocks: MockServers, without: dict[str, int]) -> dict[str, Any]:
        """Scenario a's backlog again (same calls), drained by a worker whose mapping file
        sets `aggregate = --aggregate` for both partners, on `mocks` (reset beforehand);
        its requests counted once every window has closed, against `without` (scenario
        a's backlog requests per partner)."""
        args, window_s = self.args, self.args.aggregate_s
        intro, backlog, _ = phases(args)
        self.work.mkdir(parents=True, exist_ok=True)
        path = self.work / "mappings.toml"
        path.write_text(aggregation.mapping_file(args.aggregate))
        self.extra_env = {"CS_RELAY_MAPPINGS": str(path)}
        await ensure_topics(self.settings)
        receipts = Receipts(mocks)
        producer = AIOKafkaProducer(**self.settings.kafka_options(), acks="all", linger_ms=2)
        await producer.start()
        try:
            await self._create_topics(mocks)
            await self._warm_up(producer, receipts, mocks, intro)
            before = {p: len(receipts.records(p)) for p in MEASURED}
            print(f"aggregate = {args.aggregate!r}: producing the backlog's {len(backlog.calls):,} calls", flush=True)
            await self._produce(producer, backlog)
        finally:
            await producer.stop()
        worker = self._start_worker(mocks)
        try:
            complete = await self._until_quiet(receipts, worker, quiet_s=window_s + 10)
        finally:
            await worker.stop()
        counted = aggregation.count({p: receipts.records(p)[before[p] :] for p in MEASURED}, window_s)
        figures = aggregation.figures(len(backlog.calls), without, counted, args.aggregate, window_s)
        return {**figures, "complete": complete, "app_id": self.settings.app_id}

    async def _until_quiet(self, receipts: Receipts, worker: Worker, quiet_s: float) -> bool:
        """Wait until the mocks have received no request for `quiet_s` seconds (more than
        a window: windows close one window apart while any is open) after the worker's
        first; False on timeout."""
        deadline = time.monotonic() + self.args.timeout
        seen, last_change = sum(len(receipts.records(p)) for p in MEASURED), None
        while True:
            now = time.monotonic()
            total = sum(len(receipts.records(p)) for p in MEASURED)
            if total != seen:
                seen, last_change = total, now
            if last_change is not None and now - last_change >= quiet_s:
                return True
            worker.check_alive()
            if now > deadline:
                print(f"  aggregate: gave up after {self.args.timeout:.0f} s; see {worker.log}", flush=True)
                return False
            await asyncio.sleep(0.5)

    def _now_us(self) -> int:
        """Wall-clock µs, strictly increasing: each message's timestamp is unique."""
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return self._last_us

    async def _produce(self, producer: AIOKafkaProducer, phase: Phase, rate: float | None = None) -> None:
        """Produce the phase's calls, keyed by user (`rate` per second, else at once)."""
        started = time.monotonic()
        futures = []
        for i, call in enumerate(phase.calls):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            produced = self._now_us()
            body = mix.message(
                call, seq=i, run=f"{self.stamp}-{phase.name}", produced_us=produced, padding=self.args.payload_bytes
            )
            raw = json.dumps(body, separators=(",", ":")).encode()
            phase.produced_us.append(produced)
            self._message_bytes += len(raw)
            futures.append(await producer.send(self.settings.input_topic, raw, key=user_key(raw)))
        await asyncio.gather(*futures)

    async def _until_delivered(self, receipts: Receipts, phase: Phase, worker: Worker) -> bool:
        """Wait until every partner has every event of the phase it takes; False on timeout."""
        expected = phase.expected()
        deadline = time.monotonic() + self.args.timeout
        last_report = time.monotonic()
        while True:
            receipts.collect()
            done = len(expected & receipts.delivered)
            if done == len(expected):
                return True
            worker.check_alive()
            if time.monotonic() > deadline:
                print(
                    f"  {phase.name}: gave up after {self.args.timeout:.0f} s with {done:,}/{len(expected):,} "
                    f"requests; see {worker.log}",
                    flush=True,
                )
                return False
            if time.monotonic() - last_report >= 10:
                print(f"  {phase.name}: {done:,}/{len(expected):,} partner requests delivered", flush=True)
                last_report = time.monotonic()
            await asyncio.sleep(0.2)


def _shown(path: Path) -> str:
    """A path for the results file: relative to the checkout when inside it."""
    path = path.absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def phases(args: argparse.Namespace) -> tuple[Phase, Phase, Phase]:
    """The run's calls: introductions and backlog from one plan; the paced phase
    continues with known groups and no waiting calls, so its latency is that of calls
    cs-relay can deliver at once."""
    first = mix.plan(
        args.groups + args.events, users=args.users, groups=args.groups, early_share=args.early_share, seed=args.seed
    )
    then = mix.plan(
        args.paced_events,
        users=args.users,
        groups=args.groups,
        early_share=0.0,
        seed=args.seed + 1,
        introductions=False,
    )
    return Phase("introductions", first[: args.groups]), Phase("backlog", first[args.groups :]), Phase("paced", then)


def _in_phase(r: stats.Receipt, phase: Phase) -> bool:
    return bool(phase.produced_us) and phase.produced_us[0] <= r.event_us <= phase.produced_us[-1]


def _phase_figures(receipts: Sequence[stats.Receipt], phase: Phase, *, latency: bool) -> dict[str, Any]:
    """Throughput (and latency) of one phase, from its receipts. The backlog's latency
    would only measure how long its events waited for the worker to start."""
    mine = [r for r in receipts if _in_phase(r, phase)]
    ok = [r for r in mine if r.ok]
    done = stats.completions(ok)
    first = min((r.received_us for r in mine), default=0)
    last = max(done.values(), default=0)
    figures: dict[str, Any] = {
        "events": len(phase.calls),
        "events_delivered": len(done),
        "requests": {p: sum(1 for r in ok if r.partner == p) for p in MEASURED},
        "requests_not_2xx": len(mine) - len(ok),
        "window_s": round((last - first) / stats.US, 3),
        "events_per_second": round(stats.rate(len(done), first, last), 1),
        "requests_per_second": round(stats.rate(len(ok), first, last), 1),
        "first_receipt_us": first,
    }
    if latency:
        figures["latency_ms"] = stats.summary([r.latency_ms for r in ok])
        figures["latency_ms_by_partner"] = {
            p: stats.summary([r.latency_ms for r in ok if r.partner == p]) for p in MEASURED
        }
    return figures


def _series(receipts: Sequence[stats.Receipt], measured: Measured, paced: Phase) -> dict[str, Any]:
    """Per second from the measured worker's start: events delivered, requests per
    partner, the worker's CPU use; and the paced phase's latency CDF."""
    start_us = measured.started_us
    ok = [r for r in receipts if r.ok]
    done = stats.completions(ok)
    seconds = len(stats.per_second(done.values(), start_us))
    cpu = [
        [round((b[0] - start_us) / stats.US, 2), round(stats.cpu_cores([a, b], a[0], b[0]), 3)]
        for a, b in itertools.pairwise(measured.cpu_samples)
    ]
    return {
        "start_us": start_us,
        "events_per_second": stats.per_second(done.values(), start_us, seconds),
        "requests_per_second": {
            p: stats.per_second((r.received_us for r in ok if r.partner == p), start_us, seconds) for p in MEASURED
        },
        "worker_cpu_cores": cpu,  # [seconds since start, cores used since the previous sample]
        "paced_from_second": (paced.produced_us[0] - start_us) // stats.US if paced.produced_us else None,
        "paced_latency_cdf_ms": [
            [round(p, 1), round(v, 2)] for p, v in stats.cdf_points([r.latency_ms for r in ok if _in_phase(r, paced)])
        ],
    }


def _replay_jobs(receipts: Receipts, phase: Phase, mocks: MockServers) -> list[PartnerJobs]:
    """The backlog's successful partner requests, to send again without cs-relay."""

    def requests(partner: str) -> list[tuple[str, Any]]:
        return [
            (record["raw_path"], record["json"])
            for record in receipts.records(partner)
            if 200 <= record["status"] < 300 and (r := stats.receipt(partner, record)) and _in_phase(r, phase)
        ]

    # Each destination's own credentials, as its plugin attaches them for the worker.
    settings = Settings.from_env(mocks.worker_env())
    jobs = []
    for key in MEASURED:
        attached = plugin(key).credentials(settings.destinations[key], PartnerRequest("POST", "", {}), b"")
        jobs.append(
            PartnerJobs(mocks.urls[key], requests(key), params=dict(attached.query), headers=dict(attached.headers))
        )
    return jobs


def _disk_usage(root: Path) -> dict[str, Any]:
    """Bytes of the worker's data dir: table data per table, and RocksDB's overhead."""
    data: dict[str, int] = {}
    overhead = 0
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        if stats.is_table_data(path.name):
            table = stats.table_of(path.relative_to(root).as_posix())
            data[table] = data.get(table, 0) + size
        else:
            overhead += size
    return {"data": sum(data.values()), "by_table": dict(sorted(data.items())), "overhead": overhead}


async def _count_dead_letters(settings: Settings) -> int:
    return sum([1 async for _ in read_dead_letters(settings)])


# ------------------------------------------------------------------ report


def machine_info(kafka: str) -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
        memory_kb = stats.proc_status_kb(Path("/proc/meminfo").read_text()).get("MemTotal", 0)
    except OSError:
        memory_kb = 0
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(memory_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka,
        "faust-streaming": version("faust-streaming"),
        "aiokafka": version("aiokafka"),
        "aiohttp": version("aiohttp"),
        "rocksdict": version("rocksdict"),
    }


def report(results: dict[str, Any]) -> str:
    """Scenario a's figures (when it ran), then every scenario's headline and target."""
    lines = [report_a(results)] if "cs_relay" in results else []
    if "aggregation" in results:
        lines += aggregation.report_lines(results["aggregation"])
    lines += ["scenarios (ratios of figures measured in this run):"]
    lines += scenarios.summary_lines(results.get("scenarios", {}))
    return "\n".join(lines)


def report_a(results: dict[str, Any]) -> str:
    relay, base, ratios = results["cs_relay"], results["baselines"], results["ratios"]
    burst, paced = relay["burst"], relay["paced"]
    lines = [
        f"cs-relay, {results['mix']['users']:,} users, {results['settings']['events']:,} + "
        f"{results['settings']['paced_events']:,} events, {results['machine']['cpus']} CPUs, "
        f"Kafka {results['machine']['kafka']}",
        f"  throughput     {burst['events_per_second']:,.0f} events/s delivered "
        f"({burst['requests_per_second']:,.0f} partner requests/s) over {burst['window_s']:.1f} s, "
        f"worker at {burst['worker_cpu_cores']:.2f} cores",
        f"  vs intake      {ratios['throughput_vs_raw_consumer']:.1%} of a bare consumer "
        f"({base['raw_consumer']['events_per_second']:,} events/s)",
        f"  vs delivery    {ratios['throughput_vs_plain_http']:.1%} of a bare HTTP client "
        f"({base['plain_http']['requests_per_second']:,} requests/s, "
        f"{base['plain_http']['concurrency_per_partner']} in flight per partner)",
    ]
    if paced.get("latency_ms"):
        latency = paced["latency_ms"]
        lines.append(
            f"  latency        p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms produce → partner "
            f"(paced at {paced['rate']:.0f} events/s, {latency['count']:,} requests)"
        )
    lines += [
        f"  memory         worker peak RSS {relay['worker_peak_rss_mb']:.0f} MB",
        f"  state on disk  {relay['state_data_bytes'] / 2**20:.1f} MB of table data for {results['mix']['users']:,} "
        f"users = {relay['state_data_mb_per_100k_users']:.0f} MB per 100,000 users "
        f"(+ {relay['state_rocksdb_overhead_bytes'] / 2**20:.1f} MB of RocksDB logs and options)",
        f"  dead letters   {relay['dead_letters']}; requests not 2xx: "
        f"{burst['requests_not_2xx'] + paced.get('requests_not_2xx', 0)}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
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
        from bench.suite import run_all

        results, latencies = asyncio.run(run_all(args, bootstrap, stamp, work, security))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if kafka is not None:
            kafka.stop()
    results = {
        "run": {
            "stamp": stamp,
            "wall_seconds": round(time.monotonic() - started, 1),
            "work_dir": _shown(work),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "machine": machine_info(kafka_version),
        **results,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.results_dir / stamp
    from bench.charts import draw

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
        for figures in scenario.values()
        if isinstance(figures, dict)
    )
    return 0 if complete else 1
