"""What a multi-worker faults test says when tracks never arrive (tests/test_faults_scale.py).

`missing_tracks` lists the tracks a partner never received; `loss_report` says, for the
first of them, where each one's call went: its records on the by-user topic (partition
and offsets: two offsets are intake's redo, a copy dropped as a duplicate), the consumer
group's committed offset there (past the record: acknowledged), each worker's log lines
naming its messageId (dropped as a duplicate, parked), and the user's pending queues
(held, parked, releasing); then each live worker's `/status` figures and the last
counters each worker logged. From that a loss reads as one of: never on the by-user
topic (intake), committed past unrouted, every copy dropped as a duplicate, or held
or parked for good. The report is best effort: what it cannot read it says, and it
never hides the failure it explains."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.partitioner import owner_partition
from tests.pipeline import Pipeline
from tests.test_e2e_admin import get_json
from tests.test_e2e_delivery import cs_events, csb_events

SHOWN = 12  # missing tracks looked into
LOG_LINES = 6  # log lines per worker and messageId


def missing_tracks(sent: Iterable[Mapping[str, Any]], received: Iterable[str]) -> list[Mapping[str, Any]]:
    """The sent tracks whose event a partner never received, in sent order."""
    got = set(received)
    return [m for m in sent if m["type"] == "track" and m["event"] not in got]


async def loss_report(pipeline: Pipeline, sent: list[dict]) -> str:
    """The report on `sent`, against what the two mock partners received."""
    try:
        received = {
            "ClientSuccess": [e for _, e in cs_events(await pipeline.cs_state())],
            "CustomerSuccessBox": [e for _, e in csb_events(await pipeline.csb_state())],
        }
        return await _report(pipeline, sent, received)
    except Exception as exc:  # noqa: BLE001 - the report must not replace the failure
        return f"(the loss report failed: {type(exc).__name__}: {exc})"


async def _report(pipeline: Pipeline, sent: list[dict], received: Mapping[str, Iterable[str]]) -> str:
    lines = ["--- loss report"]
    missing: dict[str, Mapping[str, Any]] = {}
    for partner, events in received.items():
        gone = missing_tracks(sent, events)
        lines.append(f"{partner}: {len(gone)} tracks missing, e.g. {[m['messageId'] for m in gone[:SHOWN]]}")
        for m in gone:
            missing.setdefault(m["messageId"], m)
    shown = dict(list(missing.items())[:SHOWN])
    by_user = f"{pipeline.name}-by-user"
    places = await _by_user_places(pipeline, by_user, set(shown))
    committed = await _committed(pipeline)
    live = [w for w in pipeline.workers if w.alive]
    for message_id, m in shown.items():
        user = str(m["userId"])
        partition = owner_partition(user, pipeline.partitions)
        offsets = places.get(message_id, [])
        mark = committed.get((by_user, partition))
        past = mark is not None and bool(offsets) and mark > max(offsets)
        lines.append(
            f"{message_id} (user {user}, by-user partition {partition}): by-user offsets {offsets or 'none'}, "
            f"committed {mark} ({'past every copy' if past else 'not past them all'})"
        )
        for worker in pipeline.workers:
            said = [line for line in _log(worker) if message_id in line][:LOG_LINES]
            lines.extend(f"  {worker.log.name}: {line}" for line in said)
        if live:
            status, body = await get_json(live[0], f"/pending/{user}")
            lines.append(f"  pending ({status}): {json.dumps(body)[:600]}")
    for worker in pipeline.workers:
        counters = [line for line in _log(worker) if "cs-relay counters:" in line]
        lines.append(f"{worker.log.name} (alive={worker.alive}) last counters: {counters[-1] if counters else 'none'}")
    for worker in live:
        status, body = await get_json(worker, "/status")
        lines.append(f"{worker.log.name} /status ({status}): {json.dumps(body)[:1500]}")
    return "\n".join(lines)


def _log(worker: Any) -> list[str]:
    try:
        return worker.log.read_text(errors="replace").splitlines()
    except OSError:
        return []


async def _by_user_places(pipeline: Pipeline, topic: str, message_ids: set[str]) -> dict[str, list[int]]:
    """messageId -> the offsets of the by-user records carrying it (one partition per user)."""
    consumer = AIOKafkaConsumer(
        topic, **pipeline.kafka_options(), auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    out: dict[str, list[int]] = defaultdict(list)
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for record in records:
                    message_id = _message_id(record.value)
                    if message_id in message_ids:
                        out[message_id].append(record.offset)
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


def _message_id(value: bytes | None) -> str | None:
    try:
        body = json.loads(value or b"")
    except ValueError:
        return None
    return body.get("messageId") if isinstance(body, dict) else None


async def _committed(pipeline: Pipeline) -> dict[tuple[str, int], int]:
    """The workers' consumer group's committed offsets (the group is the app id)."""
    admin = AIOKafkaAdminClient(**pipeline.kafka_options())
    await admin.start()
    try:
        offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(pipeline.name)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
