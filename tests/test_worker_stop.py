"""A worker stops when told, whatever its broker's state (issue 22, finding 9).

On SIGTERM a worker exits within CS_RELAY_SHUTDOWN_TIMEOUT + 10 s and says in one line
what it could not flush (`streams.runtime.stopping`). The end-to-end tests run a worker
against a private broker they can kill: gone before the SIGTERM (Faust's consumer
thread then waited 60 s: exit after 61.6 s before the stop deadline existed), and
killed during the stop while deliveries hang at the partner.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from streams.destinations import REGISTRY
from streams.localkafka import LocalKafka
from streams.runtime.stopping import STOP_GRACE, StopDeadline, Unflushed
from tests.pipeline import Pipeline, Worker, open_pipeline
from tests.test_e2e_admin import wait_ready

SHUTDOWN_TIMEOUT = 3.0
BOUND = SHUTDOWN_TIMEOUT + 10.0  # the promise
# One line, with the counts, from the graceful path ("stopping: ...") or the deadline's.
UNFLUSHED_LINE = re.compile(
    r"(?:stopping:|exiting now;) (?:not flushed: (\d+) unacknowledged events, (\d+) deliveries in flight, "
    r"(\d+) records not sent to Kafka(?:, final commit not made)? \(the events are processed again after the "
    r"restart\)|nothing left unflushed: every event acknowledged and committed)\s*$"
)


def test_the_unflushed_line_names_what_is_left():
    assert Unflushed().nothing
    assert Unflushed().line() == "nothing left unflushed: every event acknowledged and committed"
    left = Unflushed(unacknowledged=3, deliveries=2, unsent=40, committed=False)
    assert not left.nothing
    assert left.line() == (
        "not flushed: 3 unacknowledged events, 2 deliveries in flight, 40 records not sent to Kafka, "
        "final commit not made (the events are processed again after the restart)"
    )
    assert not Unflushed(committed=False).nothing
    assert UNFLUSHED_LINE.search("stopping: " + left.line())


def test_the_stop_deadline_ends_the_process_after_its_line(caplog):
    ended = threading.Event()
    statuses: list[int] = []

    def end(status: int) -> None:
        statuses.append(status)
        ended.set()

    began = time.monotonic()
    StopDeadline(0.2, lambda: Unflushed(unacknowledged=1).line(), end=end).start()
    assert ended.wait(5)
    assert time.monotonic() - began >= 0.2
    assert statuses == [1]
    assert any(
        r.getMessage().startswith("stop did not finish within 0 s, exiting now; not flushed: 1 unacknowledged events")
        for r in caplog.records
    )


def test_the_deadline_falls_within_the_promise():
    assert STOP_GRACE < 10.0


async def _stopped_within(worker: Worker, bound: float) -> float:
    """Seconds from now until the worker exits; fails past `bound`."""
    began = time.monotonic()
    while worker.alive:
        if time.monotonic() - began > bound:
            worker.kill()
            raise AssertionError(f"the worker was still running {bound:.0f} s after SIGTERM\n{worker.log_tail()}")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


def _unflushed_lines(worker: Worker) -> list[re.Match]:
    return [m for line in worker.log.read_text(errors="replace").splitlines() if (m := UNFLUSHED_LINE.search(line))]


@asynccontextmanager
async def _private_broker(tmp_path: Path) -> AsyncIterator[tuple[LocalKafka, Pipeline]]:
    """A broker of this test's own, to kill, and a pipeline on it."""
    kafka = LocalKafka(port=0, data_dir=tmp_path / "kafka")
    await asyncio.to_thread(kafka.start, 120)
    pipe = await open_pipeline(kafka.bootstrap_servers, tmp_path)
    try:
        yield kafka, pipe
    finally:
        await pipe.close()
        await asyncio.to_thread(kafka.kill)


@pytest.mark.e2e
@pytest.mark.faults  # half a minute each, a broker of its own killed: make faults
async def test_a_worker_whose_broker_is_gone_stops_in_time(tmp_path):
    async with _private_broker(tmp_path) as (kafka, pipe):
        worker = pipe.start_worker(CS_RELAY_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))
        await wait_ready(pipe, worker)
        await asyncio.to_thread(kafka.kill)

        async def noticed() -> str:
            return worker.log.read_text(errors="replace")

        # Once its clients have found the broker gone (SIGTERM at once stopped in 2 s; a few
        # seconds later, Faust's consumer thread had crashed and its stop waited 60 s).
        # asyncio says "Connect call failed", uvloop "Connection refused"
        missed = ("Connect call failed", "Connection refused")
        await pipe.eventually(noticed, lambda log: any(m in log for m in missed), what="the broker missed")
        worker.process.terminate()
        took = await _stopped_within(worker, BOUND)
        lines = _unflushed_lines(worker)
        assert lines, worker.log_tail()
        assert took <= BOUND


@pytest.mark.e2e
@pytest.mark.faults  # half a minute each, a broker of its own killed: make faults
async def test_a_worker_whose_broker_dies_while_it_stops_says_what_it_left(tmp_path):
    """Deliveries hang at the partner; SIGTERM, then the broker is killed during the drain."""
    async with _private_broker(tmp_path) as (kafka, pipe):
        # Held well past the drain (3 s), and short enough not to hold up the mocks' own stop.
        for plugin in REGISTRY:
            pipe.mocks.fault(plugin.key, latency_ms=15_000, count=1000)
        worker = pipe.start_worker(CS_RELAY_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), CS_RELAY_HTTP_TIMEOUT="200")
        users = [f"stop-{i}" for i in range(4)]
        await pipe.send(
            *(
                {"type": "identify", "userId": u, "messageId": f"m-{u}", "traits": {"email": f"{u}@example.com"}}
                for u in users
            )
        )

        await pipe.close_producer()  # before its broker goes

        async def arrived() -> int:  # a fault is taken as a request arrives, before its latency holds it
            taken = 0
            for plugin in REGISTRY:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"{pipe.mocks.url(plugin.key)}/_mock/faults") as answer:
                        faults = await answer.json()
                taken += sum(f["count"] - f["remaining"] for f in faults)
            return taken

        await pipe.eventually(arrived, lambda n: n >= 1, timeout=120, what="a delivery held at a partner")
        worker.process.terminate()
        await asyncio.to_thread(kafka.kill)
        took = await _stopped_within(worker, BOUND)
        lines = _unflushed_lines(worker)
        assert lines and lines[-1].group(1) is not None, worker.log_tail()
        unacknowledged, deliveries = int(lines[-1].group(1)), int(lines[-1].group(2))
        assert unacknowledged >= 1 and deliveries >= 1, lines[-1].group(0)
        assert took <= BOUND
