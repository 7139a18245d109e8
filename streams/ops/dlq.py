"""`cs-relay dlq list` and `cs-relay dlq replay`: reading dead letters back."""

from __future__ import annotations

from typing import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.core.deadletter import DeadLetterRecord, read_headers
from streams.settings import Settings


async def read_dead_letters(settings: Settings) -> AsyncIterator[DeadLetterRecord]:
    """Every dead letter currently in the topic, from the beginning to the end offsets
    taken at start (no consumer group: reading commits nothing)."""
    # Subscribed without a group, aiokafka assigns every partition of the topic.
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        if not tps:
            return
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
                    yield DeadLetterRecord(
                        record.offset, tp.partition, record.key, record.value, read_headers(record.headers or ())
                    )
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if not batches:
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()


async def list_dead_letters(settings: Settings, *, limit: int) -> int:
    shown = 0
    async for dl in read_dead_letters(settings):
        if shown >= limit:
            break
        h = dl.headers
        print(f"{h.get('failed-at', '?'):32} {h.get('stage', '?'):9} {dl.reason:24} {dl.partition}:{dl.offset:<8} {dl.preview()}")
        shown += 1
    print(f"{shown} dead letter(s) shown from {settings.dlq_topic}")
    return 0


REPLAY_HEADER = "cs-relay-replay"
REPLAY_DESTINATION_HEADER = "cs-relay-replay-destination"


def replay_headers(dl: DeadLetterRecord) -> list[tuple[str, bytes]]:
    """A replayed record is routed even though its messageId was seen (it was dead-
    lettered, not delivered), and only to the destination that refused it, if one did."""
    headers = [(REPLAY_HEADER, b"1")]
    if dl.headers.get("destination"):
        headers.append((REPLAY_DESTINATION_HEADER, dl.headers["destination"].encode()))
    return headers


async def replay_dead_letters(settings: Settings, *, reason: str | None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    replayed = 0
    try:
        async for dl in read_dead_letters(settings):
            if reason is not None and dl.reason != reason:
                continue
            await producer.send_and_wait(settings.input_topic, dl.value, key=dl.key, headers=replay_headers(dl))
            replayed += 1
    finally:
        await producer.stop()
    print(f"replayed {replayed} dead letter(s) to {settings.input_topic}")
    return 0
