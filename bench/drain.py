"""One drain of the benchmark's scenarios b to f (`Drains.drain`): a relay (cs-relay,
`python -m streams.cli worker`, or the naive relay, `python -m bench.naive worker`, on
asyncio's default loop as a team writes it, or on uvloop through Faust's FAUST_LOOP) with
its own app id, topics and data dir, started once on an empty input so that its
changelog topics exist, then a warm-up (every user's group call, delivered or tabled,
then the worker stops), then a backlog produced while no worker runs and drained by a
fresh worker (or two); and the bare HTTP client's ceiling on the same requests."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import profile, scenarios, stats
from bench.baselines import run_http_ceiling
from bench.driver import Driver
from bench.harness import (
    MEASURED,
    READY_LINE,
    Phase,
    Receipts,
    TrimmedReceipts,
    Worker,
    add_latency,
    merged_usage,
    probe_speed,
    reset_mocks,
    sample_machine,
    worker_env,
)
from bench.phases import phase_figures, replay_jobs
from bench.scenarios import ManyUsersPlan, TrackPlan
from bench.topics import end_offsets_total, max_changelog_records
from streams import childproc, kafkaconn
from streams.runtime.topics import ensure_topics
from streams.settings import Settings
from streams.testing.mocks import MockServers
from streams.testing.recorder import FAULTS_KEY

CS_RELAY, NAIVE, NAIVE_UVLOOP = "cs-relay", "naive", "naive-uvloop"
COMMANDS = {
    CS_RELAY: [sys.executable, "-m", "streams.cli", "worker"],
    NAIVE: [sys.executable, "-m", "bench.naive", "worker", "-l", "info"],
    NAIVE_UVLOOP: [sys.executable, "-m", "bench.naive", "worker", "-l", "info"],
}
# Faust's loop for the naive relay (read when it imports faust); cs-relay's is its own
# setting, CS_RELAY_EVENT_LOOP (uvloop unless the caller's environment says otherwise).
FAUST_LOOP = {NAIVE: "aio", NAIVE_UVLOOP: "uvloop"}


@dataclass
class Drains:
    """Drains on the run's broker (`bootstrap`) and `mocks`; files under `work`."""

    args: argparse.Namespace
    bootstrap: str
    stamp: str
    work: Path
    security: kafkaconn.KafkaSecurity
    mocks: MockServers
    drains: dict[str, dict[str, Any]] = field(default_factory=dict)  # every drain's figures, by label
    fastest_probe_us: int = 0  # the speed probe's fastest sample in this run so far (bench.speedprobe)

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
        bench = self.driver(label)
        settings, work = bench.settings, bench.work
        reset_mocks(self.mocks)
        receipts = (TrimmedReceipts if trim else Receipts)(self.mocks)
        warm, backlog = Phase("warm-up", plan.warm_up()), Phase("backlog", plan.backlog())
        await ensure_topics(settings)
        producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)
        await producer.start()
        try:
            await (await self.warmed_up(label, kind, bench, producer, receipts, warm)).stop()
            print(f"  {label}: backlog of {len(backlog.calls):,} tracks, {workers} worker(s)", flush=True)
            await bench._produce(producer, backlog)
        finally:
            await producer.stop()
        if latency_ms:
            add_latency(self.mocks, latency_ms)
        started_us = time.time_ns() // 1000
        running = [self._start(kind, settings, work, 2 + i, data_dir=work / f"worker-{i + 1}") for i in range(workers)]
        samples: list[list[tuple[int, float]]] = [[] for _ in running]
        threads: list[tuple[int, dict[str, float]]] = []  # the first worker's CPU by kind of thread
        samplers = [
            asyncio.create_task(w.sample_cpu(s, threads=threads if i == 0 else None))
            for i, (w, s) in enumerate(zip(running, samples, strict=True))
        ]
        spy = self._profile(running[0], work / f"profile-{label}.txt") if profile_it else None
        by_users: list[tuple[int, int, int]] = []  # the first worker's memory as it drains
        warm_requests = len(receipts.delivered)

        def delivered() -> int:
            return len(receipts.delivered) - warm_requests

        samplers.append(asyncio.create_task(running[0].sample_memory(by_users, delivered)))
        machine: list[tuple[int, float, float, float]] = []  # what the workers share the cores with
        samplers.append(asyncio.create_task(sample_machine(machine, lambda: sum(w.cpu_seconds() for w in running))))
        speed: list[tuple[int, int]] = []  # how fast the cores ran meanwhile
        samplers.append(asyncio.create_task(probe_speed(speed)))
        memory: list[dict[str, int]] = []
        loop = "unknown"
        try:
            complete = await bench._until_delivered(receipts, backlog, running[0])
            now_us = time.time_ns() // 1000
            memory = [w.memory_kb() for w in running]
            running[0].memory_sample(by_users, delivered)  # at the end of the drain
            loop = loop_of(running[0].log.read_text(errors="replace"))
        finally:
            profiled = await self._stop_profile(spy)
            for task in samplers:
                task.cancel()
            try:
                ended = await asyncio.gather(*samplers, return_exceptions=True)  # the probe stopped
                for failed in (e for e in ended if isinstance(e, Exception)):
                    print(f"  {label}: a sampler failed: {failed!r}", flush=True)
            finally:
                await asyncio.gather(*(w.stop() for w in running))
            for key in MEASURED:  # the latency of scenario c, if any
                self.mocks.apps[key][FAULTS_KEY].clear()
        figures = phase_figures(receipts.all, backlog, latency=False, quarters=True)
        seconds = figures["window_s"] or math_nan()
        figures.update(
            relay=kind,
            event_loop=loop,
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
            state=merged_usage([work / f"worker-{i + 1}" for i in range(workers)]),
            worker_memory_by_users=stats.memory_by_users(by_users, len(MEASURED)),
            app_id=settings.app_id,
        )
        figures["machine_cores"] = stats.machine_cores(
            machine, figures["first_receipt_us"], now_us, os.cpu_count() or 0
        )
        start = figures["first_receipt_us"]
        figures["machine_timeline"] = stats.machine_timeline(machine, start, now_us)
        # ... and how fast the cores ran: this shared VM's speed varies by up to 2x
        if speed:
            fastest = min(cpu for _, cpu in speed)
            self.fastest_probe_us = min(self.fastest_probe_us or fastest, fastest)
            figures.update(stats.speed_figures(speed, start, now_us, self.fastest_probe_us))
        # CPU per delivered event: what the load of a shared machine moves least.
        figures["cpu_ms_per_event"] = round(
            1000 * scenarios.ratio(figures["worker_cpu_cores"], figures["events_per_second"]), 3
        )
        # ... and the first worker's, split by kind of thread (`stats.thread_kind`)
        per_worker = figures["events_per_second"] / workers
        figures["cpu_ms_per_event_by_thread"] = {
            kind: round(1000 * scenarios.ratio(cores, per_worker), 3)
            for kind, cores in stats.cores_by_kind(threads, figures["first_receipt_us"], now_us).items()
        }
        if changelog_records:
            figures["changelog_max_record_bytes"] = await max_changelog_records(settings)
        if profiled is not None:
            figures["profile"] = profiled
        if keep_jobs:
            figures["_jobs"] = replay_jobs(receipts, backlog, self.mocks)
        reset_mocks(self.mocks)
        print(
            f"  {label}: {figures['events_per_second']:,.1f} tracks/s ({figures['requests_per_second']:,.0f} "
            f"requests/s) over {figures['window_s']:.1f} s at {figures['worker_cpu_cores']:.2f} cores",
            flush=True,
        )
        self.drains[label] = figures
        return figures

    def driver(self, label: str) -> Driver:
        """The driver of one measurement: its own app id, topics and data dir."""
        work = self.work / label
        work.mkdir(parents=True, exist_ok=True)
        bench = Driver(self.args, self.bootstrap, self.stamp, work, self.security)
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
        return bench

    async def warmed_up(
        self, label: str, kind: str, bench: Driver, producer: AIOKafkaProducer, receipts: Receipts, warm: Phase
    ) -> Worker:
        """A first start on the empty input (the changelog topics), then the warm-up's
        calls, delivered (or tabled) by a second worker: returned running."""
        settings, work = bench.settings, bench.work
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
        except BaseException:
            await worker.stop()
            raise
        return worker

    def _start(self, kind: str, settings: Settings, work: Path, n: int, data_dir: Path | None = None) -> Worker:
        env = worker_env(settings, self.mocks)
        if data_dir is not None:
            env["CS_RELAY_DATA_DIR"] = str(data_dir)
        if kind in FAUST_LOOP:
            env["FAUST_LOOP"] = FAUST_LOOP[kind]
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
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=childproc.dies_with_parent()
            )
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


def loop_of(log: str) -> str:
    """The event loop a relay's worker ran on, from its log: cs-relay's `event loop:`
    line, else Faust's banner (its transport line ends in "+uvloop" on uvloop)."""
    for name in ("uvloop", "asyncio"):
        if f"event loop: {name}" in log:
            return name
    return "uvloop" if "+uvloop" in log else "asyncio"


def math_nan() -> float:
    return float("nan")
