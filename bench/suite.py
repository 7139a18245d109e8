"""Scenarios b to f of the benchmark (`bench.scenarios`), run on the broker and mocks of
the run (scenario a is `bench.run.Bench`).

Each measurement is a *drain*: one relay (cs-relay, `python -m streams.cli worker`, or
the naive relay, `python -m bench.naive worker`) with its own app id, topics and data
dir, started once on an empty input so that its changelog topics exist, then a warm-up
(every user's group call, delivered or tabled, then the worker stops), then a backlog
produced while no worker runs and drained by a fresh worker (or two). The rate is the
tracks delivered (both partners have them) over the time from the first partner
request of the backlog to the last; the worker's CPU, peak memory and data dir are
read as in scenario a.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import aggregation, profile, scenarios, stats
from bench.baselines import run_http_ceiling
from bench.run import (
    MEASURED,
    READY_LINE,
    Bench,
    Phase,
    Receipts,
    Worker,
    _disk_usage,
    _phase_figures,
    _replay_jobs,
    worker_env,
)
from bench.scenarios import ManyUsersPlan, TrackPlan
from streams import kafkaconn
from streams.runtime.topics import RECORD_LIMIT, ensure_topics
from streams.settings import Settings
from streams.testing.mocks import MockServers
from streams.testing.recorder import FAULTS_KEY, RECORDS_KEY, STATE_KEY

CS_RELAY, NAIVE = "cs-relay", "naive"
COMMANDS = {
    CS_RELAY: [sys.executable, "-m", "streams.cli", "worker"],
    NAIVE: [sys.executable, "-m", "bench.naive", "worker", "-l", "info"],
}


class TrimmedReceipts(Receipts):
    """Receipts that drop the mocks' records once read (scenario f: a million users'
    requests would otherwise stay in the mocks' memory)."""

    def collect(self) -> None:
        super().collect()
        for partner, records in self._records.items():
            del records[: self._read[partner]]
            self._read[partner] = 0


def reset_mocks(mocks: MockServers) -> None:
    """Forget recorded requests, the partners' state and any fault."""
    for key in MEASURED:
        mocks.apps[key][RECORDS_KEY].clear()
        mocks.apps[key][STATE_KEY].clear()
        mocks.apps[key][FAULTS_KEY].clear()


def add_latency(mocks: MockServers, latency_ms: float) -> None:
    for key in MEASURED:
        mocks.apps[key][FAULTS_KEY].add({"latency_ms": latency_ms})


@dataclass
class Suite:
    """Scenarios b to f on the run's broker (`bootstrap`) and `mocks`; files under `work`."""

    args: argparse.Namespace
    bootstrap: str
    stamp: str
    work: Path
    security: kafkaconn.KafkaSecurity
    mocks: MockServers
    drains: dict[str, dict[str, Any]] = field(default_factory=dict)  # every drain's figures, by label

    def __post_init__(self) -> None:
        self.plans = scenarios.plans(self.args.scale, self.args.million_users)
        self.max_in_flight = self.args.http_concurrency

    # ------------------------------------------------------------------ scenarios

    async def run(self, chosen: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in chosen:
            if name == "a":
                continue
            print(f"scenario {name}: {scenarios.TITLES[name]}", flush=True)
            started = time.monotonic()
            out[name] = await getattr(self, f"scenario_{name}")()
            out[name]["title"] = scenarios.TITLES[name]
            out[name]["target"] = scenarios.TARGETS[name]
            out[name]["wall_seconds"] = round(time.monotonic() - started, 1)
            print("\n".join(scenarios.summary_lines({name: out[name]})), flush=True)
        return out

    async def scenario_b(self) -> dict[str, Any]:
        plan = self.plans["b"]["tracks"]
        relay = await self.drain("b-cs-relay", CS_RELAY, plan, profile_it=self.args.profile, keep_jobs=True)
        naive = await self.drain("b-naive", NAIVE, plan, profile_it=self.args.profile)
        http = await self.http_ceiling(relay.pop("_jobs"))
        vs_http = scenarios.ratio(relay["requests_per_second"], http["requests_per_second"])
        vs_naive = scenarios.ratio(relay["events_per_second"], naive["events_per_second"])
        naive_vs_http = scenarios.ratio(naive["requests_per_second"], http["requests_per_second"])
        return {
            "plan": _plan(plan),
            "cs_relay": relay,
            "naive": naive,
            "plain_http": http,
            "ratios": {
                "cs_relay_vs_plain_http": _round(vs_http),
                "cs_relay_vs_naive": _round(vs_naive),
                "naive_vs_plain_http": _round(naive_vs_http),
                "cs_relay_vs_naive_cpu_per_event": _round(
                    scenarios.ratio(relay["cpu_ms_per_event"], naive["cpu_ms_per_event"])
                ),
            },
            "headline": f"cs-relay {relay['events_per_second']:,.0f} tracks/s = {scenarios.percent(vs_http)} of the "
            f"bare aiohttp client ({http['requests_per_second']:,.0f} requests/s), {vs_naive:.2f}x the naive relay "
            f"({naive['events_per_second']:,.0f} tracks/s); CPU per track {relay['cpu_ms_per_event']:.2f} ms vs "
            f"{naive['cpu_ms_per_event']:.2f} ms",
        }

    async def scenario_c(self) -> dict[str, Any]:
        plan, naive_plan = self.plans["c"]["tracks"], self.plans["c"]["naive"]
        latency = scenarios.LATENCY_MS
        relay = await self.drain("c-cs-relay", CS_RELAY, plan, latency_ms=latency, keep_jobs=True)
        naive = await self.drain("c-naive", NAIVE, naive_plan, latency_ms=latency)
        add_latency(self.mocks, latency)
        try:
            http = await self.http_ceiling(relay.pop("_jobs"))
        finally:
            reset_mocks(self.mocks)
        bound = scenarios.in_flight_bound(self.max_in_flight, latency / 1000)
        per_partner = {p: relay["requests_per_second_by_partner"][p] for p in MEASURED}
        share = scenarios.bound_share(per_partner, bound)
        http_share = scenarios.ratio(http["requests_per_second"] / len(MEASURED), bound)
        return {
            "plan": _plan(plan),
            "naive_plan": _plan(naive_plan),
            "latency_ms": latency,
            "max_in_flight": self.max_in_flight,
            "bound_requests_per_second_per_partner": bound,
            "cs_relay": relay,
            "naive": naive,
            "plain_http": http,
            "ratios": {
                "cs_relay_share_of_bound": _round(share),
                "plain_http_share_of_bound": _round(http_share),
                "cs_relay_vs_naive": _round(scenarios.ratio(relay["events_per_second"], naive["events_per_second"])),
            },
            "headline": f"cs-relay {relay['events_per_second']:,.0f} tracks/s, "
            f"{sum(per_partner.values()) / len(per_partner):,.0f} requests/s per partner = "
            f"{scenarios.percent(share)} of the bound ({self.max_in_flight} / {latency / 1000:g} s = {bound:,.0f}/s); "
            f"bare client {scenarios.percent(http_share)}; naive {naive['events_per_second']:,.1f} tracks/s",
        }

    async def scenario_d(self) -> dict[str, Any]:
        heavy_plan, light_plan = self.plans["d"]["heavy"], self.plans["d"]["light"]
        heavy = await self.drain("d-heavy", CS_RELAY, heavy_plan, changelog_records=True)
        light = await self.drain("d-light", CS_RELAY, light_plan, changelog_records=True)
        rate = scenarios.ratio(heavy["events_per_second"], light["events_per_second"])
        for figures, plan in ((heavy, heavy_plan), (light, light_plan)):
            figures["state_bytes_per_user"] = round(scenarios.per_user(figures["state"]["data"], plan.users))
        big_topic, big = scenarios.largest(heavy["changelog_max_record_bytes"])
        return {
            "heavy_plan": _plan(heavy_plan),
            "light_plan": _plan(light_plan),
            "heavy": heavy,
            "light": light,
            "ratios": {"heavy_vs_light_rate": _round(rate)},
            # max.message.bytes that cs-relay sets on the topics it creates
            "record_bound_bytes": RECORD_LIMIT,
            "headline": f"heavy {heavy['events_per_second']:,.0f} tracks/s = {scenarios.percent(rate)} of light "
            f"({light['events_per_second']:,.0f}); state {heavy['state_bytes_per_user']:,} vs "
            f"{light['state_bytes_per_user']:,} bytes per user; largest changelog record {big:,} bytes ({big_topic}; "
            f"the topics' bound: {RECORD_LIMIT:,})",
        }

    async def scenario_e(self) -> dict[str, Any]:
        plan = self.plans["e"]["tracks"]
        one = self.drains.get("b-cs-relay")
        if one is None or self.args.scale != 1.0 and one["events"] != plan.tracks:
            one = await self.drain("e-one", CS_RELAY, plan)
        two = await self.drain("e-two", CS_RELAY, plan, workers=2)
        gain = scenarios.ratio(two["events_per_second"], one["events_per_second"])
        return {
            "plan": _plan(plan),
            "one_worker": one if "e-one" in self.drains else {"same_as": "b.cs_relay"},
            "two_workers": two,
            "one_worker_events_per_second": one["events_per_second"],
            "ratios": {"two_vs_one": _round(gain)},
            "headline": f"two workers {two['events_per_second']:,.0f} tracks/s = {gain:.2f}x one "
            f"({one['events_per_second']:,.0f}); both at {two['worker_cpu_cores']:.2f} cores together",
        }

    async def scenario_f(self) -> dict[str, Any]:
        plan = self.plans["f"]["users"]
        relay = await self.drain("f-many-users", CS_RELAY, plan, trim=True)
        rss = relay["worker_rss_at_end_mb"]
        return {
            "plan": {"users": plan.users, "groups": plan.groups},
            "cs_relay": relay,
            "state_bytes_per_user": round(scenarios.per_user(relay["state"]["data"], plan.users)),
            "headline": f"{plan.users:,} users: worker RSS {rss:,.0f} MB at the end (peak "
            f"{relay['worker_peak_rss_mb']:,.0f} MB), table data {relay['state']['data'] / 2**20:,.1f} MB "
            f"({scenarios.per_user(relay['state']['data'], plan.users):,.0f} bytes per user)",
        }

    # ------------------------------------------------------------------ one drain

    async def drain(
        self,
        label: str,
        kind: str,
        plan: TrackPlan | ManyUsersPlan,
        *,
        workers: int = 1,
        latency_ms: float = 0.0,
        profile_it: bool = False,
        changelog_records: bool = False,
        keep_jobs: bool = False,
        trim: bool = False,
    ) -> dict[str, Any]:
        work = self.work / label
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(self.args, self.bootstrap, self.stamp, work, self.security)
        name = f"bench-{self.stamp.lower()}-{label}-{uuid.uuid4().hex[:4]}"
        bench.settings = Settings(
            kafka_bootstrap_servers=self.bootstrap,
            kafka_security=self.security,
            input_topic=f"{name}-in",
            dlq_topic=f"{name}-dlq",
            app_id=name,
            data_dir=work / "worker-1",
            topic_partitions=self.args.partitions,
            input_keyed_by_user=not self.args.by_user_hop,
        )
        settings = bench.settings
        reset_mocks(self.mocks)
        receipts = (TrimmedReceipts if trim else Receipts)(self.mocks)
        warm, backlog = Phase("warm-up", plan.warm_up()), Phase("backlog", plan.backlog())
        await ensure_topics(settings)
        producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)
        await producer.start()
        try:
            print(f"  {label}: first start (topics), warm-up of {len(warm.calls):,} group calls", flush=True)
            first = self._start(kind, settings, work, 0)
            try:
                await first.until_logged(READY_LINE, self.args.timeout)
            finally:
                await first.stop()
            await bench._produce(producer, warm)
            worker = self._start(kind, settings, work, 1)
            try:
                if kind == CS_RELAY:
                    done = await bench._until_delivered(receipts, warm, worker)
                else:
                    done = await self._until_tabled(settings, len(warm.calls), worker)
                if not done:
                    raise RuntimeError(f"{label}: the warm-up was not done; see {worker.log}")
            finally:
                await worker.stop()
            print(f"  {label}: backlog of {len(backlog.calls):,} tracks, {workers} worker(s)", flush=True)
            await bench._produce(producer, backlog)
        finally:
            await producer.stop()
        if latency_ms:
            add_latency(self.mocks, latency_ms)
        started_us = time.time_ns() // 1000
        running = [self._start(kind, settings, work, 2 + i, data_dir=work / f"worker-{i + 1}") for i in range(workers)]
        samples: list[list[tuple[int, float]]] = [[] for _ in running]
        samplers = [asyncio.create_task(w.sample_cpu(s)) for w, s in zip(running, samples, strict=True)]
        spy = self._profile(running[0], work / f"profile-{label}.txt") if profile_it else None
        memory: list[dict[str, int]] = []
        try:
            complete = await bench._until_delivered(receipts, backlog, running[0])
            now_us = time.time_ns() // 1000
            memory = [w.memory_kb() for w in running]
        finally:
            profiled = await self._stop_profile(spy)
            for task in samplers:
                task.cancel()
            await asyncio.gather(*(w.stop() for w in running))
            for key in MEASURED:  # the latency of scenario c, if any
                self.mocks.apps[key][FAULTS_KEY].clear()
        figures = _phase_figures(receipts.all, backlog, latency=False)
        seconds = figures["window_s"] or math_nan()
        figures.update(
            relay=kind,
            workers=workers,
            complete=complete,
            requests_per_second_by_partner={p: round(figures["requests"][p] / seconds, 1) for p in MEASURED},
            worker_cpu_cores=round(
                sum(stats.cpu_cores(s, figures["first_receipt_us"], now_us) for s in samples),
                2,
            ),
            start_to_first_delivery_s=round((figures["first_receipt_us"] - started_us) / stats.US, 1),
            worker_peak_rss_mb=round(max(m.get("VmHWM", 0) for m in memory) / 1024, 1) if memory else None,
            worker_rss_at_end_mb=round(max(m.get("VmRSS", 0) for m in memory) / 1024, 1) if memory else None,
            state=_merged_usage([work / f"worker-{i + 1}" for i in range(workers)]),
            app_id=settings.app_id,
        )
        # CPU per delivered event: what the load of a shared machine moves least.
        figures["cpu_ms_per_event"] = round(
            1000 * scenarios.ratio(figures["worker_cpu_cores"], figures["events_per_second"]), 3
        )
        if changelog_records:
            figures["changelog_max_record_bytes"] = await max_changelog_records(settings)
        if profiled is not None:
            figures["profile"] = profiled
        if keep_jobs:
            figures["_jobs"] = _replay_jobs(receipts, backlog, self.mocks)
        reset_mocks(self.mocks)
        print(
            f"  {label}: {figures['events_per_second']:,.1f} tracks/s ({figures['requests_per_second']:,.0f} "
            f"requests/s) over {figures['window_s']:.1f} s at {figures['worker_cpu_cores']:.2f} cores",
            flush=True,
        )
        self.drains[label] = figures
        return figures

    def _start(self, kind: str, settings: Settings, work: Path, n: int, data_dir: Path | None = None) -> Worker:
        env = worker_env(settings, self.mocks)
        if data_dir is not None:
            env["CS_RELAY_DATA_DIR"] = str(data_dir)
        return Worker.start(env, work / f"{kind}-{n}.log", command=COMMANDS[kind])

    async def _until_tabled(self, settings: Settings, expected: int, worker: Worker) -> bool:
        """The naive relay sends nothing for a group call: its warm-up is done when its
        table's changelog holds a record per group call."""
        topic = f"{settings.app_id}-user_groups-changelog"
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            worker.check_alive()
            if await end_offsets_total(settings, topic) >= expected:
                await asyncio.sleep(3)  # let it commit its input offsets
                return True
            await asyncio.sleep(0.5)
        return False

    async def http_ceiling(self, jobs: Any) -> dict[str, Any]:
        """The bare aiohttp client, in its own process, sending the drain's requests."""
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            http = await asyncio.get_running_loop().run_in_executor(
                pool, run_http_ceiling, jobs, self.args.http_concurrency
            )
        reset_mocks(self.mocks)
        return {
            "requests": http.count,
            "ok": http.ok,
            "seconds": round(http.seconds, 3),
            "concurrency_per_partner": self.args.http_concurrency,
            "requests_per_second": round(http.per_second),
        }

    def _profile(self, worker: Worker, out: Path) -> subprocess.Popen | None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("  --profile: py-spy is not installed (pip install py-spy); not profiling", flush=True)
            return None
        command = [spy, "record", "--pid", str(worker.process.pid), "--rate", "100", "--nonblocking"]
        command += ["--format", "raw", "--output", str(out)]
        with (out.parent / "py-spy.log").open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process.output = out  # type: ignore[attr-defined]
        return process

    async def _stop_profile(self, spy: subprocess.Popen | None) -> dict[str, Any] | None:
        if spy is None:
            return None
        spy.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(spy.wait, 60)
        except subprocess.TimeoutExpired:
            spy.kill()
        out: Path = spy.output  # type: ignore[attr-defined]
        if not out.exists():
            return {"error": f"py-spy wrote nothing; see {out.parent / 'py-spy.log'}"}
        folded = profile.read_folded(out.read_text())
        return {"file": str(out), **profile.top(folded, 15)}


def _plan(plan: TrackPlan) -> dict[str, Any]:
    return {"users": plan.users, "tracks_per_user": plan.per_user, "tracks": plan.tracks, "groups": plan.groups}


def _round(value: float) -> float:
    return round(value, 4)


def math_nan() -> float:
    return float("nan")


def _merged_usage(dirs: Sequence[Path]) -> dict[str, Any]:
    usages = [_disk_usage(d) for d in dirs if d.exists()]
    by_table: dict[str, int] = {}
    for usage in usages:
        for table, size in usage["by_table"].items():
            by_table[table] = by_table.get(table, 0) + size
    return {
        "data": sum(u["data"] for u in usages),
        "by_table": dict(sorted(by_table.items())),
        "overhead": sum(u["overhead"] for u in usages),
    }


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of `topics` that exist (a bare consumer's metadata does not list
    the partitions of topics it is not subscribed to)."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if not t.get("error_code")
        for p in t.get("partitions", ())
    ]


async def end_offsets_total(settings: Settings, topic: str) -> int:
    partitions = await partitions_of(settings, [topic])
    if not partitions:
        return 0
    consumer = AIOKafkaConsumer(**settings.kafka_options(), group_id=None)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def max_changelog_records(settings: Settings, timeout: float = 300.0) -> dict[str, int]:
    """The largest record (key + value bytes) in each of the app's changelog topics,
    read from the beginning to their end offsets."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_options(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 2**20,
        fetch_max_bytes=64 * 2**20,
    )
    await consumer.start()
    try:
        topics = sorted(
            t for t in await consumer.topics() if t.startswith(settings.app_id + "-") and t.endswith("-changelog")
        )
        partitions = await partitions_of(settings, topics)
        ends = {tp: end for tp, end in (await consumer.end_offsets(partitions)).items() if end > 0}
        largest = {t: 0 for t in topics}
        if not ends:
            return largest
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        deadline = time.monotonic() + timeout
        left = set(ends)
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5_000)
            for tp, records in batch.items():
                for record in records:
                    size = (record.serialized_key_size or 0) + (record.serialized_value_size or 0)
                    largest[tp.topic] = max(largest[tp.topic], size)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return {t: size for t, size in largest.items()}
    finally:
        await consumer.stop()


def summary_a(results: dict[str, Any]) -> dict[str, Any]:
    """Scenario a (bench.run.Bench) in the shape of the others: its ratios and headline."""
    burst, paced, ratios = results["cs_relay"]["burst"], results["cs_relay"]["paced"], results["ratios"]
    base = results["baselines"]
    p99 = (paced.get("latency_ms") or {}).get("p99", float("nan"))
    return {
        "complete": burst["complete"] and paced["complete"],
        "ratios": {
            "cs_relay_vs_plain_http": ratios["throughput_vs_plain_http"],
            "cs_relay_vs_raw_consumer": ratios["throughput_vs_raw_consumer"],
        },
        "p99_latency_ms": p99,
        "paced_rate": paced.get("rate"),
        "headline": f"cs-relay {burst['events_per_second']:,.0f} calls/s ({burst['requests_per_second']:,.0f} "
        f"requests/s) = {scenarios.percent(ratios['throughput_vs_plain_http'])} of the bare aiohttp client "
        f"({base['plain_http']['requests_per_second']:,} requests/s); p99 latency {p99:.0f} ms at "
        f"{paced.get('rate') or 0:.0f} calls/s",
    }


async def run_all(
    args: argparse.Namespace, bootstrap: str, stamp: str, work: Path, security: kafkaconn.KafkaSecurity
) -> tuple[dict[str, Any], list[float]]:
    """Every chosen scenario on one set of mocks (and the caller's broker)."""
    from streams.destinations import REGISTRY
    from streams.testing.mocks import start_mocks

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
