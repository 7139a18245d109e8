"""The whole pipeline for end-to-end tests: a real broker, every destination's mock,
and cs-relay workers as real processes (`python -m streams.cli worker`).

Every `Pipeline` has its own app id (consumer group, internal topics, changelogs),
input and dead-letter topics and data dir, so tests share one broker without seeing
each other's records. Tests wait for conditions with `eventually` (a timeout, never a
fixed sleep) and read what the partners received from the mocks (`PartnerMocks`).
The pytest plugin's `relay_pipeline` fixture is one of these with a worker running;
the project's own end-to-end tests use the same class (tests/pipeline.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams import childproc
from streams.destinations import REGISTRY
from streams.envreader import EnvReader
from streams.kafkaconn import VARIABLES as KAFKA_SECURITY_VARIABLES
from streams.kafkaconn import KafkaSecurity
from streams.ops.producer import user_key
from streams.ops.webserve import free_port
from streams.testing.partners import PartnerMocks

T = TypeVar("T")

# Every destination's variables: a test's worker sees only what the test gives it.
DESTINATION_VARIABLES = frozenset(v.name for p in REGISTRY for v in p.variables)
READY_TIMEOUT = 90.0  # a worker's start: joining the group, creating its topics, recovering tables


@dataclass
class Worker:
    """One worker process; its output goes to `log`."""

    process: subprocess.Popen
    log: Path
    web_port: int

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop), then SIGKILL if it does not exit in time."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL: a crash, nothing flushed."""
        if self.alive:
            self.process.kill()
        return self.process.wait(30)


@dataclass
class Pipeline:
    """Topics of its own on the broker at `bootstrap`, workers started on demand
    (`start_worker`), pointed at `mocks`; `root` holds their data dirs and logs."""

    bootstrap: str
    mocks: PartnerMocks
    root: Path
    name: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:10]}")
    partitions: int = 2
    env: dict[str, str] = field(default_factory=dict)
    # KAFKA_SECURITY_PROTOCOL and the KAFKA_SASL_* / KAFKA_SSL_* variables of a secured
    # broker: given to the workers, and used by the pipeline's own producer and consumer.
    # By default those of the environment when it names an external broker.
    kafka_env: dict[str, str] = field(default_factory=lambda: _external_kafka_env())
    workers: list[Worker] = field(default_factory=list)
    cwd: Path | None = None  # the workers' working directory; None: `root`
    owns_mocks: bool = False  # close() closes the mocks too
    _producer: AIOKafkaProducer | None = None

    @property
    def input_topic(self) -> str:
        return f"{self.name}-in"

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}-dlq"

    @property
    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity.from_env(EnvReader(self.kafka_env))

    def kafka_options(self) -> dict[str, Any]:
        """What an aiokafka client needs to reach this pipeline's broker."""
        return {"bootstrap_servers": self.bootstrap, **self.kafka_security.client_options()}

    def worker_env(self, index: int = 0, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CS_RELAY_") and k not in DESTINATION_VARIABLES and k not in KAFKA_SECURITY_VARIABLES
        }
        env.update(self.kafka_env)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            CS_RELAY_APP_ID=self.name,
            CS_RELAY_INPUT_TOPIC=self.input_topic,
            CS_RELAY_DLQ_TOPIC=self.dlq_topic,
            CS_RELAY_TOPIC_PARTITIONS=str(self.partitions),
            CS_RELAY_DATA_DIR=str(self.root / f"worker-{index}"),
            PYTHONUNBUFFERED="1",
            **self.mocks.worker_env(),
        )
        env.update(self.env)
        env.update(extra)
        return env

    def start_worker(self, index: int = 0, **extra_env: str) -> Worker:
        """Start a worker process (it needs a few seconds to join; tests need not wait:
        it reads the topics from the beginning)."""
        web_port = free_port()
        env = self.worker_env(index, CS_RELAY_WEB_PORT=str(web_port), **extra_env)
        log = self.root / f"worker-{index}-{len(self.workers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env,
                cwd=self.cwd or self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=childproc.dies_with_parent(),  # a test run killed outright takes its workers along
            )
        worker = Worker(process, log, web_port)
        self.workers.append(worker)
        return worker

    async def wait_ready(self, worker: Worker, timeout: float = READY_TIMEOUT) -> None:
        """Return once `worker` answers 200 on `/ready` (partitions assigned, tables recovered)."""

        async def ready() -> int:
            if not worker.alive:
                raise AssertionError(f"the worker exited with code {worker.process.poll()}:\n{worker.log_tail()}")
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://127.0.0.1:{worker.web_port}/ready") as response:
                        return response.status
            except aiohttp.ClientError:
                return 0

        await self.eventually(ready, lambda status: status == 200, timeout=timeout, what="the worker's /ready")

    # ----------------------------------------------------------------- producing

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self.kafka_options(), acks="all")
            await self._producer.start()
        return self._producer

    async def send(self, *messages: Mapping[str, Any] | bytes) -> None:
        """Produce messages to the input topic, keyed by user as `cs-relay send` does;
        bytes are sent as they are (bad input)."""
        producer = await self.producer()
        futures = []
        for message in messages:
            raw = message if isinstance(message, bytes) else json.dumps(message).encode()
            futures.append(await producer.send(self.input_topic, raw, key=user_key(raw)))
        await asyncio.gather(*futures)

    # ----------------------------------------------------------------- observing

    async def requests(self, destination: str) -> list[dict[str, Any]]:
        """What the destination's mock received (streams/testing/recorder.py)."""
        return self.mocks.requests(destination)

    async def state(self, destination: str) -> dict[str, Any]:
        """What the destination's mock now knows."""
        return self.mocks.state(destination)

    async def cs_requests(self) -> list[dict[str, Any]]:
        return await self.requests("clientsuccess")

    async def csb_requests(self) -> list[dict[str, Any]]:
        return await self.requests("customersuccessbox")

    async def cs_state(self) -> dict[str, Any]:
        return await self.state("clientsuccess")

    async def csb_state(self) -> dict[str, Any]:
        return await self.state("customersuccessbox")

    async def fault(self, partner: str, **spec: Any) -> None:
        """Inject a fault at a mock (a destination key, or "cs" / "csb"): see streams/testing/recorder.py."""
        self.mocks.fault(partner, **spec)

    async def clear_faults(self, partner: str) -> None:
        self.mocks.clear_faults(partner)

    async def dead_letters(self) -> list[tuple[bytes, dict[str, str]]]:
        """Everything in the dead-letter topic now: (original bytes, headers)."""
        return await self.records(self.dlq_topic)

    async def records(self, topic: str) -> list[tuple[bytes, dict[str, str]]]:
        """Everything in `topic` now: (value, headers)."""
        consumer = AIOKafkaConsumer(
            topic,
            **self.kafka_options(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        try:
            partitions = consumer.assignment()
            if not partitions:
                return []
            ends = await consumer.end_offsets(list(partitions))
            out: list[tuple[bytes, dict[str, str]]] = []
            remaining = {tp for tp, end in ends.items() if end > 0}
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
                        out.append((record.value, headers))
                        if record.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
            return out
        finally:
            await consumer.stop()

    async def eventually(
        self,
        probe: Callable[[], Awaitable[T]],
        until: Callable[[T], bool],
        *,
        timeout: float = 60.0,
        what: str = "the condition",
    ) -> T:
        """Poll `probe` until `until(value)` holds; on timeout fail with the last value
        and the workers' log tails."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            value = await probe()
            if until(value):
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.log.name} (alive={w.alive})\n{w.log_tail()}" for w in self.workers)
                shown = repr(value)
                shown = shown if len(shown) <= 3000 else shown[:3000] + f"... ({len(shown)} characters)"
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {shown}\n{logs}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def close_producer(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def close(self) -> None:
        for worker in self.workers:  # told at once: they stop side by side
            if worker.alive:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.terminate()
        await self.close_producer()
        if self.owns_mocks:
            self.mocks.close()


def paths(requests: Iterable[Mapping[str, Any]]) -> list[str]:
    return [r["path"] for r in requests]


def _external_kafka_env() -> dict[str, str]:
    """The security variables of the environment, when KAFKA_BOOTSTRAP_SERVERS names the
    broker the tests use (the plugin's `kafka_bootstrap`); none for the local one."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return {}
    return {k: v for k, v in os.environ.items() if k in KAFKA_SECURITY_VARIABLES}


async def open_pipeline(
    bootstrap: str, root: Path, mock_credentials: Mapping[str, str] | None = None, **kwargs: Any
) -> Pipeline:
    """A pipeline with mocks of its own (demo credentials unless given), closed with it."""
    return Pipeline(bootstrap, PartnerMocks(mock_credentials), root, owns_mocks=True, **kwargs)
