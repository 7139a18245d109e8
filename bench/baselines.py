"""The two ceilings cs-relay is compared with, measured on the same machine in the same run.

* `consume_ceiling`: a bare aiokafka consumer reading the input topic (no parsing, no
  state, no producing), for at least two seconds: the most events per second this
  broker and client hand over.
* `http_ceiling`: a bare aiohttp client sending the requests cs-relay delivered straight
  to the mocks, with as many in flight per partner as cs-relay allows
  (CS_RELAY_MAX_IN_FLIGHT): the most requests per second the mocks take here. It runs
  in its own process (`run_http_ceiling`), as the worker does, because the mocks run in
  the benchmark's process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer

from streams.settings import Settings


@dataclass(frozen=True)
class Ceiling:
    """`count` records read or requests sent (`ok` of them answered 2xx) in `seconds`."""

    count: int
    seconds: float
    ok: int | None = None

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


async def consume_ceiling(
    settings: Settings, topic: str, expected: int, timeout: float, at_least: float = 2.0
) -> Ceiling:
    """Read the `expected` records of `topic` from the beginning, again and again until
    `at_least` seconds have passed (a small topic is read in a fraction of a second, and
    what the consumer prefetched while starting would flatter one pass). Timed from the
    first fetch: connecting and finding the partitions do not count."""
    consumer = AIOKafkaConsumer(
        topic,
        **settings.kafka_options(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        started = time.monotonic()
        count, this_pass, last_at = 0, 0, started
        while time.monotonic() < started + timeout:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got = sum(len(records) for records in batch.values())
            if not got:
                continue
            count, this_pass, last_at = count + got, this_pass + got, time.monotonic()
            if this_pass >= expected:
                if last_at - started >= at_least:
                    break
                this_pass = 0
                await consumer.seek_to_beginning()
        return Ceiling(count, last_at - started)
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class PartnerJobs:
    """Requests for one partner: its base URL, credentials, and (path, body) pairs."""

    base_url: str
    requests: Sequence[tuple[str, Any]]
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def run_http_ceiling(partners: Sequence[PartnerJobs], concurrency: int) -> Ceiling:
    """`http_ceiling` in a fresh event loop: the entry point for a worker process."""
    return asyncio.run(http_ceiling(partners, concurrency))


async def http_ceiling(partners: Sequence[PartnerJobs], concurrency: int) -> Ceiling:
    """Send every request, `concurrency` in flight per partner, all partners at once."""
    started = time.monotonic()
    counts = await asyncio.gather(*(_send_all(p, concurrency) for p in partners))
    seconds = time.monotonic() - started
    return Ceiling(sum(c[0] for c in counts), seconds, ok=sum(c[1] for c in counts))


async def _send_all(partner: PartnerJobs, concurrency: int) -> tuple[int, int]:
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for item in partner.requests:
        queue.put_nowait(item)
    sent, ok = 0, 0
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    headers = {"Content-Type": "application/json", **partner.headers}
    async with aiohttp.ClientSession(partner.base_url, connector=connector, headers=headers) as session:

        async def drain() -> None:
            nonlocal sent, ok
            while not queue.empty():
                path, body = queue.get_nowait()
                async with session.post(path, json=body, params=dict(partner.params) or None) as response:
                    await response.read()
                    sent += 1
                    ok += 200 <= response.status < 300

        await asyncio.gather(*(drain() for _ in range(concurrency)))
    return sent, ok
