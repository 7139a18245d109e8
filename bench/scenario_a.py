"""Scenario a, the default mix (`Bench`): a warm-up, a backlog drained by a fresh worker
(throughput), a paced phase (latency), memory and state size, and the two ceilings
(a bare consumer, a bare HTTP client); also the same backlog with aggregation on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import aggregation, mix, stats
from bench.baselines import consume_ceiling, run_http_ceiling
from bench.driver import Driver
from bench.harness import (
    MEASURED,
    PARTNERS_OF,
    Receipts,
    count_dead_letters,
    disk_usage,
    probe_speed,
    shown,
    until_cpu_quiet,
)
from bench.phases import Measured, Phase, in_phase, phase_figures, phases, replay_jobs, series
from streams.destinations import REGISTRY
from streams.runtime.topics import ensure_topics
from streams.testing.mocks import MockServers, start_mocks


class Bench(Driver):
    """Scenario a: one run of the default mix, with its own app id and topics."""

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
            state = disk_usage(settings.data_dir)
            dead_letters = await count_dead_letters(settings)
            ceilings = await self._ceilings(receipts, mocks, backlog, len(calls))
        finally:
            if shared is None:
                await mocks.close()
        return self._results(calls, receipts, measured, state, dead_letters, ceilings, paced)

    async def _measure(
        self, producer: AIOKafkaProducer, receipts: Receipts, mocks: MockServers, backlog: Phase, paced: Phase
    ) -> Measured:
        print(f"backlog: producing {len(backlog.calls):,} calls, then starting the worker", flush=True)
        await self._produce(producer, backlog)
        started_us = time.time_ns() // 1000
        worker = self._start_worker(mocks)
        cpu_samples: list[tuple[int, float]] = []
        sampler = asyncio.create_task(worker.sample_cpu(cpu_samples))
        speed: list[tuple[int, int]] = []  # how fast the cores ran meanwhile (bench.speedprobe)
        prober = asyncio.create_task(probe_speed(speed))
        try:
            complete = await self._until_delivered(receipts, backlog, worker)
            backlog_figures = {**phase_figures(receipts.all, backlog, latency=False), "complete": complete}
            backlog_figures["worker_cpu_cores"] = round(
                stats.cpu_cores(cpu_samples, backlog_figures["first_receipt_us"], time.time_ns() // 1000), 2
            )
            paced_figures: dict[str, Any] = {"events": 0, "complete": True}
            if paced.calls:
                # Latency is measured on a worker at rest: what the backlog left it to do
                # (confirming released events, say) would otherwise delay the first paced calls.
                await until_cpu_quiet(cpu_samples)
                rate = self.args.paced_rate or max(1.0, backlog_figures["events_per_second"] / 2)
                print(f"paced: {len(paced.calls):,} calls at {rate:,.0f}/s", flush=True)
                await self._produce(producer, paced, rate)
                complete = await self._until_delivered(receipts, paced, worker)
                paced_figures = {
                    **phase_figures(receipts.all, paced, latency=True),
                    "rate": round(rate, 1),
                    "complete": complete,
                }
            memory = worker.memory_kb()
            if speed:  # over each phase's window, against the fastest the probe ran in scenario a
                fastest = min(cpu for _, cpu in speed)
                for figures in (backlog_figures, paced_figures):
                    if figures.get("window_s"):
                        at = figures["first_receipt_us"]
                        end = at + int(figures["window_s"] * stats.US)
                        figures.update(stats.speed_figures(speed, at, end, fastest))
        finally:
            prober.cancel()
            sampler.cancel()
            await asyncio.gather(prober, sampler, return_exceptions=True)  # each ended (the probe stopped)
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
        jobs = replay_jobs(receipts, backlog, mocks)
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
        settings = {k: (shown(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
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
            "series": series(receipts.all, measured, paced),
        }
        # Each paced request, for a look at when the slow ones came (work dir, not results).
        with (self.work / "paced-receipts.csv").open("w") as out:
            out.write("partner,event_us,received_us,status\n")
            for r in receipts.all:
                if in_phase(r, paced):
                    out.write(f"{r.partner},{r.event_us},{r.received_us},{r.status}\n")
        return results, [r.latency_ms for r in receipts.all if r.ok and in_phase(r, paced)]

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
