"""The input topic's span of time for `cs-relay backfill`: per partition the offsets from
`--since` to `--until` (Kafka's offsets for times), what an earlier backfill of the same
destination handled there (`streams.core.backfilled`, read from `{app_id}-backfill`),
and the records themselves, read without a consumer group (nothing committed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.core import backfilled
from streams.kafkaconn import start_client
from streams.runtime.topiclist import backfill_topic_name, topic_list
from streams.settings import Settings


def record_topic(settings: Settings) -> str:
    """Where backfill keeps what it handled: compacted, one partition."""
    return backfill_topic_name(settings.app_id)


@dataclass
class Span:
    starts: dict[TopicPartition, int]
    ends: dict[TopicPartition, int]
    done: dict[TopicPartition, backfilled.Done]
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(max(0, self.ends[tp] - self.starts[tp]) for tp in self.starts)


def _consumer(settings: Settings, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **settings.kafka_options(), group_id=None, enable_auto_commit=False)


async def open_span(settings: Settings, destination: str, since: datetime, until: datetime | None) -> Span:
    """The span of the input topic, and what an earlier backfill to `destination` did."""
    await _ensure_record_topic(settings)
    consumer = _consumer(settings, settings.input_topic)  # without a group: every partition assigned
    try:
        await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        if not tps:
            raise ValueError(f"the input topic {settings.input_topic!r} does not exist or has no partitions")
        firsts = await consumer.beginning_offsets(tps)
        lasts = await consumer.end_offsets(tps)
        at_since = await consumer.offsets_for_times({tp: _ms(since) for tp in tps})
        at_until = await consumer.offsets_for_times({tp: _ms(until) for tp in tps}) if until else {}
        starts = {tp: at_since[tp].offset if at_since[tp] else lasts[tp] for tp in tps}
        ends = {tp: (at_until[tp].offset if at_until.get(tp) else lasts[tp]) for tp in tps}
        span = Span(starts, ends, await _done(settings, destination, tps))
        for tp in tps:
            if firsts[tp] > 0 and starts[tp] == firsts[tp] and firsts[tp] < lasts[tp]:
                oldest = await _timestamp(consumer, tp, firsts[tp])
                if oldest is not None and oldest > _ms(since):
                    when = datetime.fromtimestamp(oldest / 1000, UTC).isoformat()
                    span.warnings.append(
                        f"{tp.topic}[{tp.partition}]: the topic's retention no longer holds {since.isoformat()}; "
                        f"its oldest message is from {when}"
                    )
        return span
    finally:
        await consumer.stop()


async def read_records(settings: Settings, span: Span, batch: int) -> AsyncIterator[tuple[TopicPartition, list[Any]]]:
    """The span's records, partition by partition, in offset order, `batch` at a time."""
    consumer = _consumer(settings)
    try:
        await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
        for tp, start in span.starts.items():
            end = span.ends[tp]
            if start >= end:
                continue
            consumer.assign([tp])
            consumer.seek(tp, start)
            while True:
                got = await consumer.getmany(tp, timeout_ms=1000, max_records=batch)
                records = [r for r in got.get(tp, []) if r.offset < end]
                if records:
                    yield tp, records
                if await consumer.position(tp) >= end:
                    break
    finally:
        await consumer.stop()


async def _done(
    settings: Settings, destination: str, tps: list[TopicPartition]
) -> dict[TopicPartition, backfilled.Done]:
    """The backfill record of each partition: the last value of its key in the topic."""
    out = {tp: backfilled.Done() for tp in tps}
    consumer = _consumer(settings)
    consumer_tps = [TopicPartition(record_topic(settings), 0)]  # assigned, not subscribed: no metadata race
    try:
        await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
        consumer.assign(consumer_tps)
        await consumer.seek_to_beginning(*consumer_tps)
        ends = await consumer.end_offsets(consumer_tps)
        remaining = {tp for tp in consumer_tps if ends[tp] > 0}
        while remaining:
            for records in (await consumer.getmany(*remaining, timeout_ms=1000)).values():
                for record in records:
                    named = backfilled.parse_key(record.key or b"")
                    if named is not None and named[0] == destination:
                        target = TopicPartition(named[1], named[2])
                        if target in out:
                            out[target] = backfilled.Done.from_bytes(record.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def _timestamp(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> int | None:
    consumer.seek(tp, offset)
    got = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
    records = got.get(tp, [])
    return records[0].timestamp if records else None


async def _ensure_record_topic(settings: Settings) -> None:
    """The record topic as the topic list declares it (a worker creates it at start-up too)."""
    (topic,) = [t for t in topic_list(settings) if t.name == record_topic(settings)]
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await start_client(admin, settings.kafka_security, settings.kafka_bootstrap_servers)
    try:
        if topic.name in set(await admin.list_topics()):
            return
        new = NewTopic(topic.name, topic.partitions, settings.topic_replication_factor, topic_configs=topic.configs())
        try:
            await admin.create_topics([new])
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
