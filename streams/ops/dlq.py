"""`cs-relay dlq list` and `cs-relay dlq replay`: reading dead letters back."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.core.deadletter import (
    REPLAY_DESTINATION_HEADER,
    REPLAY_HEADER,
    REPLAY_OF_HEADER,
    DeadLetterRecord,
    read_headers,
)
from streams.core.redact import MASK, redact
from streams.kafkaconn import start_client
from streams.ops.progress import Progress
from streams.settings import Settings


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    """The one place `cs-relay dlq` builds its consumer. Subscribed without a group,
    aiokafka assigns every partition of the topic."""
    return AIOKafkaConsumer(
        settings.dlq_topic,
        **settings.kafka_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def _producer(settings: Settings) -> AIOKafkaProducer:
    """The one place `cs-relay dlq replay` builds its producer."""
    return AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)


async def read_dead_letters(settings: Settings) -> AsyncIterator[DeadLetterRecord]:
    """Every dead letter currently in the topic, from the beginning to the end offsets
    taken at start (no consumer group: reading commits nothing)."""
    consumer = _consumer(settings)
    try:
        await start_client(consumer, settings.kafka_security, settings.kafka_bootstrap_servers)
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
                        record.offset,
                        tp.partition,
                        record.key,
                        record.value,
                        read_headers(record.headers or ()),
                        topic=tp.topic,
                    )
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if not batches:
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()


def summary(dl: DeadLetterRecord, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A dead letter as `dlq list --json` prints it: why, where, when, and a preview of
    the original bytes with secrets, API keys and write keys masked."""
    h = dl.headers
    source = {
        "topic": h.get("source-topic"),
        "partition": _int(h.get("source-partition")),
        "offset": _int(h.get("source-offset")),
    }
    return {
        "reason": dl.reason,
        "stage": h.get("stage"),
        "destination": h.get("destination"),
        "status": _int(h.get("status")),
        "time": h.get("failed-at"),
        "detail": h.get("detail"),
        "source": source if source["topic"] is not None else None,
        "partition": dl.partition,
        "offset": dl.offset,
        "preview": redacted_preview(dl, secrets),
    }


_JSON_SECRET = re.compile(r'(?i)("(?:writeKey|api_key|apiKey|password|secret|token)"\s*:\s*")[^"]*(")')


def redacted_preview(dl: DeadLetterRecord, secrets: Iterable[str] = (), width: int = 80) -> str:
    """`dl.preview()`, masked before it is cut (a secret cut short would not be found)."""
    text = dl.value[:4096].decode("utf-8", errors="replace")
    masked = _JSON_SECRET.sub(rf"\g<1>{MASK}\g<2>", redact(text, secrets))
    return DeadLetterRecord(dl.offset, dl.partition, dl.key, masked.encode("utf-8"), dl.headers).preview(width)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def list_dead_letters(settings: Settings, *, limit: int, as_json: bool = False, out: TextIO | None = None) -> int:
    """`cs-relay dlq list`: a table, or with `as_json` one JSON object per line."""
    out = out or sys.stdout
    secrets = settings.secrets()
    shown = 0
    async for dl in read_dead_letters(settings):
        if shown >= limit:
            break
        if as_json:
            print(json.dumps(summary(dl, secrets), ensure_ascii=False, separators=(",", ":")), file=out)
        else:
            h = dl.headers
            print(
                f"{h.get('failed-at', '?'):32} {h.get('stage', '?'):9} {dl.reason:24} {dl.partition}:{dl.offset:<8} "
                f"{redacted_preview(dl, secrets)}",
                file=out,
            )
        shown += 1
    if not as_json:
        print(f"{shown} dead letter(s) shown from {settings.dlq_topic}", file=out)
    return 0


def replay_headers(dl: DeadLetterRecord) -> list[tuple[str, bytes]]:
    """A replayed record is routed even though its messageId was seen (it was dead-
    lettered, not delivered), and only to the destination that refused it, if one did.
    It names the dead letter (`REPLAY_OF_HEADER`: its own identity when it has one, the
    same for its copies a redo wrote; else topic/partition/offset in the dead-letter
    topic), which the user's partition remembers like a messageId
    (streams.core.dedupe): the same dead letter replayed again is dropped."""
    headers = [(REPLAY_HEADER, b"1")]
    if dl.headers.get("destination"):
        headers.append((REPLAY_DESTINATION_HEADER, dl.headers["destination"].encode()))
    if dl.replay_identity is not None:
        headers.append((REPLAY_OF_HEADER, dl.replay_identity.encode()))
    return headers


REPLAY_BATCH = 500


async def replay_dead_letters(
    settings: Settings,
    *,
    reason: str | None,
    batch_size: int = REPLAY_BATCH,
    progress: Progress | None = None,
    out: TextIO | None = None,
    dry_run: bool = False,
) -> int:
    """Send the dead letters (those with `reason`, or all) back to the input topic, in
    batches of `batch_size` whose acknowledgements are awaited together, with progress.
    `dry_run`: list them as `dlq list` does and send nothing."""
    if dry_run:
        return await _dry_run(settings, reason, out or sys.stdout)
    progress = progress or Progress("replayed")
    chosen = (dl async for dl in read_dead_letters(settings) if reason is None or dl.reason == reason)
    replayed = await replay_records(settings, chosen, batch_size=batch_size, progress=progress)
    progress.finish()
    print(f"replayed {replayed} dead letter(s) to {settings.input_topic}", file=out or sys.stdout)
    return 0


async def replay_records(
    settings: Settings,
    records: Iterable[DeadLetterRecord] | AsyncIterable[DeadLetterRecord],
    *,
    batch_size: int = REPLAY_BATCH,
    progress: Progress | None = None,
) -> int:
    """Send dead letters read from the dead-letter topic back to the input topic: the
    original key and bytes with `replay_headers` (the dead letter's identity among
    them, so the same dead letter replayed again is dropped as a duplicate), in batches
    of `batch_size` whose acknowledgements are awaited together. How many were sent.
    `cs-relay dlq replay` and the console's replay button both send through here."""
    producer = _producer(settings)
    replayed = 0
    batch: list[asyncio.Future] = []
    try:
        await start_client(producer, settings.kafka_security, settings.kafka_bootstrap_servers)
        async for dl in _each(records):
            batch.append(await producer.send(settings.input_topic, dl.value, key=dl.key, headers=replay_headers(dl)))
            if len(batch) >= batch_size:
                replayed += await _acknowledged(batch)
                if progress is not None:
                    progress.update(replayed)
        replayed += await _acknowledged(batch)
        if progress is not None:
            progress.update(replayed)
    finally:
        await producer.stop()
    return replayed


async def _each(
    records: Iterable[DeadLetterRecord] | AsyncIterable[DeadLetterRecord],
) -> AsyncIterator[DeadLetterRecord]:
    if isinstance(records, AsyncIterable):
        async for dl in records:
            yield dl
    else:
        for dl in records:
            yield dl


async def _dry_run(settings: Settings, reason: str | None, out: TextIO) -> int:
    secrets = settings.secrets()
    n = 0
    async for dl in read_dead_letters(settings):
        if reason is not None and dl.reason != reason:
            continue
        h = dl.headers
        to = h.get("destination") or "every destination"
        print(
            f"{dl.partition}:{dl.offset:<8} {dl.reason:24} {to:20} {redacted_preview(dl, secrets)}",
            file=out,
        )
        n += 1
    print(f"would replay {n} dead letter(s) to {settings.input_topic} (dry run: nothing sent)", file=out)
    return 0


async def _acknowledged(batch: list[asyncio.Future]) -> int:
    """Wait for a batch's acknowledgements (raising the first failure); how many, and empty the batch."""
    try:
        await asyncio.gather(*batch)
        return len(batch)
    finally:
        batch.clear()
