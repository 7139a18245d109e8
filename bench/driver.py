"""Driving one relay for a measurement (`Driver`, the base of scenario a's `Bench`):
its settings, starting its worker, producing calls and waiting for their delivery."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench import mix
from bench.harness import MEASURED, READY_LINE, Phase, Receipts, Worker, worker_env
from streams import kafkaconn
from streams.ops.producer import user_key
from streams.settings import Settings
from streams.testing.mocks import MockServers


class Driver:
    """Runs the relay of one measurement: its own app id and topics on the broker, its data
    under `work`; produces a phase's calls and waits for the partners to have them."""

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

    def _start_worker(self, mocks: MockServers) -> Worker:
        self._workers += 1
        env = {**worker_env(self.settings, mocks), **self.extra_env}
        return Worker.start(env, self.work / f"worker-{self._workers}.log")

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
        # Counted as they come: intersecting the whole sets every 0.2 s cost the bench
        # a core by a million users (scenario f), taken from the worker it measures.
        done = len(expected & receipts.delivered)
        while True:
            done += sum(1 for key in receipts.collect() if key in expected)
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
