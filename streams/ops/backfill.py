"""`cs-relay backfill --destination NAME --since TIME [--until TIME] [--dry-run] [--rate N]`:
deliver the input topic's messages of a span of time to one destination (one turned on
later, say), attributed with today's state.

* The span: Kafka's offsets for the two times, per input partition; `--until` absent,
  the end of the topic when the backfill starts. A partition whose oldest record is
  younger than `--since` has lost part of the span to retention: said in one line.
* Each message is decided by the destination's own `decide` (its mapping rules
  included) against today's state, read from a running worker and never written:
  older traits never overwrite newer ones. A call the destination cannot attribute
  even today is skipped, as is one its rules skip, or one it aggregates (backfill
  sends calls, it does not rebuild windows). A call it refuses, or a request it
  refuses for good, is dead-lettered with the destination named, so `dlq replay`
  sends it to that destination only.
* The 24 h dedupe window does not apply (as for replay). Instead backfill keeps its own
  record of the offsets it handled, per destination and input partition
  (`streams.core.backfilled`, in the compacted `{app_id}-backfill` topic), written
  after each batch: a second backfill over the same span sends nothing twice. A crash
  mid-batch may send that batch's requests again.
* A user's requests go in order; users go concurrently (`CS_RELAY_MAX_IN_FLIGHT`),
  at most `--rate` requests per second. A partner that keeps failing stops the
  backfill after the handled batches are recorded: run the command again to go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer, TopicPartition

from streams.core import backfilled
from streams.core.deadletter import dead_letter_headers
from streams.core.decision import Hold, Reject, Send
from streams.core.destination import Destination
from streams.core.message import InvalidMessage, Message
from streams.core.reasons import Reason
from streams.core.retry import Outcome
from streams.core.segment import parse
from streams.core.state import UserState
from streams.ops.backfillspan import Span, open_span, read_records, record_topic
from streams.ops.backfillstate import StateUnavailable, TodaysState
from streams.ops.progress import Progress
from streams.settings import Settings

BATCH = 500


class BackfillStopped(Exception):
    """The partner kept failing: what was handled is recorded."""


@dataclasses.dataclass
class Counts:
    read: int = 0
    sent: int = 0
    already: int = 0
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    dead_lettered: int = 0

    def summary(self, dry_run: bool) -> str:
        skipped = sum(self.skipped.values())
        why = "; ".join(f"{n:,} {reason}" for reason, n in self.skipped.most_common())
        sent = "would send" if dry_run else "sent"
        return (
            f"read {self.read:,}, {sent} {self.sent:,}, already delivered by an earlier backfill {self.already:,}, "
            f"skipped {skipped:,}{f' ({why})' if why else ''}, dead-lettered {self.dead_lettered:,}"
        )


async def backfill(
    settings: Settings,
    destination: Destination,
    client: Any,
    span: Span,
    state: TodaysState,
    *,
    dry_run: bool = False,
    out: TextIO | None = None,
    progress: Progress | None = None,
) -> Counts:
    """Deliver the span's messages to `destination` through `client` (a PartnerClient)."""
    out = out or sys.stdout
    counts = Counts()
    progress = progress or Progress("read", total=span.total)
    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        async for tp, records in read_records(settings, span, BATCH):
            done = span.done[tp]
            fresh = []
            for record in records:
                counts.read += 1
                if record.offset in done:
                    counts.already += 1
                else:
                    fresh.append(record)
            unhandled = await _deliver(fresh, tp, destination, client, state, counts, producer, settings, dry_run)
            if not dry_run:
                for start, end in _runs([r.offset for r in records], unhandled):
                    done = done.add(start, end)
                span.done[tp] = done
                key = backfilled.key(destination.key, tp.topic, tp.partition)
                await (await producer.send(record_topic(settings), done.to_bytes(), key=key))
            progress.update(counts.read, counts.read)
            if unhandled:
                first = min(unhandled)
                raise BackfillStopped(
                    f"{destination.key} kept failing at {tp.topic}[{tp.partition}] offset {first}; "
                    "what was handled is recorded: run the same command again to go on"
                )
    finally:
        progress.finish()
        await producer.stop()
    return counts


async def _deliver(
    records: Sequence[Any],
    tp: TopicPartition,
    destination: Destination,
    client: Any,
    state: TodaysState,
    counts: Counts,
    producer: AIOKafkaProducer,
    settings: Settings,
    dry_run: bool,
) -> set[int]:
    """Decide and send one batch, each user's calls in order; the offsets left for a
    later run: a user's calls from one whose delivery kept failing on."""
    by_user: dict[str, list[tuple[Any, Message]]] = {}
    for record in records:
        try:
            msg = parse(record.value)
        except InvalidMessage:
            counts.skipped["not a valid Segment call (intake dead-lettered it)"] += 1
            continue
        by_user.setdefault(msg.key, []).append((record, msg))
    unhandled: set[int] = set()

    async def one_user(calls: list[tuple[Any, Message]]) -> None:
        for index, (record, msg) in enumerate(calls):
            user = await state.user(msg.key)
            await state.load_groups(user, msg.context_group_id, msg.group_id)
            today = user or UserState(key=msg.key, user_id=msg.user_id)  # never seen: what the call says
            decision = destination.decide(msg, today, state.group)
            if isinstance(decision, Send) and destination.fold(decision.request) is not None:
                counts.skipped["aggregated by the mapping file (windows are not rebuilt)"] += 1
            elif isinstance(decision, Send) and dry_run:
                counts.sent += 1
            elif isinstance(decision, Send):
                result = await client.send(decision.request)
                if result.outcome is Outcome.DONE:
                    counts.sent += 1
                elif result.outcome is Outcome.FAIL:
                    detail = f"{destination.key} answered {result.status}: {result.excerpt}"
                    await _dead_letter(
                        producer, settings, tp, record, Reason.PARTNER_REFUSED, detail, destination, result.status
                    )
                    counts.dead_lettered += 1
                else:  # the user's later calls wait for the next run, in order
                    unhandled.update(r.offset for r, _ in calls[index:])
                    return
            elif isinstance(decision, Hold):
                counts.skipped["not attributable with today's state"] += 1
            elif isinstance(decision, Reject):
                if not dry_run:
                    await _dead_letter(producer, settings, tp, record, decision.reason, decision.detail, destination)
                counts.dead_lettered += 1
            else:
                counts.skipped[f"skipped by the destination's rules ({decision.reason})"] += 1

    await asyncio.gather(*(one_user(calls) for calls in by_user.values()))
    return unhandled


def _runs(offsets: Sequence[int], unhandled: set[int]) -> list[tuple[int, int]]:
    """A batch's offsets (in order; Kafka may skip numbers) as half-open ranges of
    handled ones: each run ends where an unhandled one, or the batch, ends."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for offset in offsets:
        if offset in unhandled:
            if start is not None:
                runs.append((start, offset))
            start = None
        elif start is None:
            start = offset
    if start is not None and offsets:
        runs.append((start, offsets[-1] + 1))
    return runs


async def _dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    tp: TopicPartition,
    record: Any,
    reason: str,
    detail: str,
    destination: Destination,
    status: int | None = None,
) -> None:
    headers = dead_letter_headers(
        reason=str(reason),
        detail=detail,
        stage="backfill",
        source={"topic": tp.topic, "partition": tp.partition, "offset": record.offset},
        destination=destination.key,
        status=status,
        secrets=settings.secrets(),
    )
    await (await producer.send(settings.dlq_topic, record.value, key=record.key, headers=list(headers.items())))


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or a time ago: 90m, 24h, 7d."""
    now = now or datetime.now(UTC)
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.fromtimestamp(now.timestamp() - int(text[:-1]) * units[text[-1]], UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-12-01, 2026-12-01T08:00:00Z) or 90m, 24h, 7d"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["BackfillStopped", "Counts", "StateUnavailable", "backfill", "open_span", "parse_time"]
