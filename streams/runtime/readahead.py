"""The catch-up's readers on Kafka: the by-user partitions of an assignment, from the
committed offsets of the worker's own consumer group on, for the scan that looks ahead
of the reading loops (`reader`: streams.runtime.scanahead.Reader); and, for the input
read in place, its partitions' committed and end offsets (`bounds`:
streams.runtime.inputcatchup.Bounds).

A consumer of its own, in the worker's group but assigned the partitions by hand: it
neither joins the group (no rebalance, no member) nor commits (auto-commit off), so
Faust's consumer and its offsets are untouched; it only fetches the committed offsets
to start from (the earliest, for a partition never committed). Its fetches are bounded
by FETCH_BYTES, the records passed on a batch of at most BATCH at a time, and the scan
(`streams.runtime.scanahead`) keeps only what it needs of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafkaconn import start_client
from streams.runtime.inputcatchup import Bounds
from streams.runtime.scanahead import Reader, Scanned
from streams.settings import Settings

FETCH_BYTES = 4 * 1024 * 1024  # per fetch, over the partitions
PARTITION_FETCH_BYTES = 1024 * 1024  # per partition and fetch (the topic's records are smaller)
BATCH = 1000  # records per batch handed to the scan
POLL_MS = 500
TAIL = 64  # the offsets read back from an input partition's end for its last record
TAIL_SECONDS = 10.0  # for reading them (then Kafka is asked again)


def reader(settings: Settings, group_id: str, topic: str) -> Reader:
    """Reads `topic`'s partitions from `group_id`'s committed offsets."""

    async def read(partitions: set[int]) -> AsyncGenerator[list[Scanned], None]:
        consumer = AIOKafkaConsumer(
            **settings.kafka_options(),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=FETCH_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            client_id=f"{group_id}-read-ahead",
        )
        await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
        try:
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            while partitions:
                done = [tp for tp in consumer.assignment() if tp.partition not in partitions]
                if done:
                    consumer.pause(*done)  # read to its token, or revoked
                got = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH)
                yield [(tp.partition, r.key, dict(r.headers), r.value or b"") for tp, rs in got.items() for r in rs]
        finally:
            await consumer.stop()

    return read


def bounds(settings: Settings, group_id: str, topic: str) -> Bounds:
    """`topic`'s partitions: `group_id`'s committed offset (the earliest, for a partition
    never committed, as the worker's consumer starts there) and the offset after its
    last record. That is the end unless the log ends with transaction markers, which
    take offsets no reader is handed: the last TAIL offsets are read to find it."""

    async def ask(partitions: set[int]) -> Mapping[int, tuple[int, int]]:
        consumer = AIOKafkaConsumer(
            **settings.kafka_options(), group_id=group_id, enable_auto_commit=False, client_id=f"{group_id}-bounds"
        )
        await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
        try:
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            found = {}
            for tp in tps:
                committed = await consumer.committed(tp)
                found[tp] = (starts[tp] if committed is None else committed, ends[tp])
            last = await _last_records(consumer, {tp: (max(c, e - TAIL), e) for tp, (c, e) in found.items() if c < e})
            return {tp.partition: (c, last.get(tp, e)) for tp, (c, e) in found.items()}
        finally:
            await consumer.stop()

    return ask


async def _last_records(consumer: AIOKafkaConsumer, spans: dict[TopicPartition, tuple[int, int]]) -> dict:
    """Per partition, the offset after its last record in [start, end) (`start` if none)."""
    if not spans:
        return {}
    consumer.assign(list(spans))
    for tp, (start, _end) in spans.items():
        consumer.seek(tp, start)
    last = {tp: start for tp, (start, _end) in spans.items()}
    async with asyncio.timeout(TAIL_SECONDS):
        while left := [tp for tp, (_start, end) in spans.items() if await consumer.position(tp) < end]:
            got = await consumer.getmany(*left, timeout_ms=POLL_MS, max_records=TAIL)
            for tp, records in got.items():
                for record in records:
                    if record.offset < spans[tp][1]:
                        last[tp] = record.offset + 1
    return last
