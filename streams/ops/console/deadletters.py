"""The console's dead letters: the most recent ones read from the dead-letter topic.

Every worker's dead letters are in the topic, each with its identity there
(`topic/partition/offset`, `DeadLetterRecord.identity`): the page lists those, and its
replay sends them through `streams.ops.dlq.replay_records`, as `cs-relay dlq replay`
does, so a dead letter replayed twice (from the console, the CLI, or both) is
delivered once: the user's partition drops the second as a duplicate of the first.

`read_recent` reads the last `per_partition` records of each partition (an aiokafka
consumer without a group, so assigned every partition, each `seek`-ed to its end
offset minus that many),
bounded in count, in bytes (the oldest of a partition go first past its share) and in
time (what was read when the timeout passes is shown, marked incomplete). It is
asynchronous throughout: the worker's event loop is never blocked. `RecentDeadLetters`
keeps the last reading for a few seconds, so pages and forms do not read the topic
each time, and reads again sooner when this worker has sent a dead letter since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from streams.core.deadletter import DeadLetterRecord, read_headers
from streams.kafkaconn import start_client

log = logging.getLogger(__name__)

PER_PARTITION = 200  # the last records of each partition of the dead-letter topic
MAX_BYTES = 8 * 1024 * 1024  # keys and values kept in all, shared between the partitions
READ_TIMEOUT = 5.0  # seconds for one reading, connecting included
CACHE_SECONDS = 5.0  # a reading is reused this long


@dataclass(frozen=True)
class Recent:
    """One reading of the dead-letter topic: `records` newest first. `complete` is False
    when the count, bytes or time bound cut it short; `error` says why nothing could
    be read."""

    records: tuple[DeadLetterRecord, ...] = ()
    complete: bool = True
    error: str | None = None
    topic: str = ""
    per_partition: int = PER_PARTITION

    def reasons(self) -> list[str]:
        return sorted({r.reason for r in self.records})

    def with_reason(self, reason: str | None) -> list[DeadLetterRecord]:
        return [r for r in self.records if reason is None or r.reason == reason]

    def by_identity(self, identities: list[str]) -> tuple[list[DeadLetterRecord], int]:
        """The records named (in that order, each once), and how many named are not here."""
        known = {r.identity: r for r in self.records}
        wanted = list(dict.fromkeys(identities))
        found = [known[i] for i in wanted if i in known]
        return found, len(wanted) - len(found)


def newest_first(records: list[DeadLetterRecord]) -> list[DeadLetterRecord]:
    """By `failed-at`, newest first (then by partition and offset: one partition's are
    in the order they were written)."""

    def at(r: DeadLetterRecord) -> float:
        try:
            return datetime.fromisoformat(r.headers.get("failed-at", "")).timestamp()
        except ValueError:
            return 0.0

    return sorted(records, key=lambda r: (at(r), r.partition, r.offset), reverse=True)


@dataclass
class _Reading:
    """What a reading has collected so far: kept when the timeout cuts it short."""

    budget: int  # bytes per partition
    kept: dict[int, deque[DeadLetterRecord]] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    dropped: bool = False

    def add(self, record: DeadLetterRecord) -> None:
        ring = self.kept.setdefault(record.partition, deque())
        ring.append(record)
        self.sizes[record.partition] = self.sizes.get(record.partition, 0) + _size(record)
        while ring and self.sizes[record.partition] > self.budget:
            self.sizes[record.partition] -= _size(ring.popleft())
            self.dropped = True

    def records(self) -> list[DeadLetterRecord]:
        return newest_first([r for ring in self.kept.values() for r in ring])


def _size(record: DeadLetterRecord) -> int:
    return len(record.value) + len(record.key or b"")


async def read_recent(
    settings: Any,
    *,
    per_partition: int = PER_PARTITION,
    max_bytes: int = MAX_BYTES,
    timeout: float = READ_TIMEOUT,
) -> Recent:
    """The last `per_partition` dead letters of each partition of `settings.dlq_topic`,
    newest first (no consumer group: reading commits nothing)."""
    topic = settings.dlq_topic
    consumer = AIOKafkaConsumer(
        topic,  # without a group, aiokafka assigns it every partition of the topic (as `cs-relay dlq`)
        **settings.kafka_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=max(1000, int(timeout * 1000)),
    )
    reading = _Reading(budget=max_bytes)
    started = False
    try:

        async def read() -> None:
            nonlocal started
            await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
            started = True
            await _read(consumer, topic, per_partition, max_bytes, reading)

        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        log.warning("console: reading %s took over %.0f s; showing what was read", topic, timeout)
        return Recent(tuple(reading.records()), False, None if started else "timed out", topic, per_partition)
    except Exception as exc:  # the page says so; the worker goes on
        log.warning("console: cannot read the dead-letter topic %s: %s", topic, exc)
        return Recent((), False, f"{type(exc).__name__}: {exc}", topic, per_partition)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return Recent(tuple(reading.records()), not reading.dropped, None, topic, per_partition)


async def _read(consumer: AIOKafkaConsumer, topic: str, per_partition: int, max_bytes: int, reading: _Reading) -> None:
    tps = sorted((tp for tp in consumer.assignment() if tp.topic == topic), key=lambda tp: tp.partition)
    if not tps:
        return
    reading.budget = max(1, max_bytes // len(tps))
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    remaining = set()
    for tp in tps:
        if ends[tp] > starts[tp]:
            first = max(starts[tp], ends[tp] - per_partition)
            if first > starts[tp]:
                reading.dropped = True  # older ones exist: `cs-relay dlq list` shows them
            consumer.seek(tp, first)
            remaining.add(tp)
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                reading.add(
                    DeadLetterRecord(
                        record.offset,
                        tp.partition,
                        record.key,
                        record.value if record.value is not None else b"",
                        read_headers(record.headers or ()),
                        topic=tp.topic,
                    )
                )
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)


Reader = Callable[[], Awaitable[Recent]]


class RecentDeadLetters:
    """The last reading of the topic, reused for `ttl` seconds; read again sooner when
    `stale_after()` (the time this worker last sent a dead letter) is newer than it.
    Concurrent requests share one reading."""

    def __init__(
        self,
        read: Reader,
        clock: Callable[[], float],
        *,
        ttl: float = CACHE_SECONDS,
        stale_after: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._read, self._clock, self.ttl, self._stale_after = read, clock, ttl, stale_after
        self._last: Recent | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Recent:
        async with self._lock:
            now = self._clock()
            if (
                self._last is None
                or now - self._read_at >= self.ttl
                or now < self._read_at
                or self._stale_after() > self._read_at
            ):
                self._read_at = now
                self._last = await self._read()
            return self._last


__all__ = ["Recent", "RecentDeadLetters", "read_recent", "newest_first", "PER_PARTITION", "CACHE_SECONDS"]
