"""What the bench reads back from Kafka: the partitions of topics, their end offsets,
the largest record of each of an app's changelog topics."""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.settings import Settings


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
