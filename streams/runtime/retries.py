"""Parked deliveries and their retries.

A delivery that still fails in a retryable way after the client's quick retries is
parked: a `park` control record carries it to the user's partition, where it joins the
user's pending record (durable, in the changelog) and the event is acknowledged. The
user's later events for that partner wait behind it; everything else flows. Every
RETRY_TICK a timer finds users whose parked head is due and sends a `retry-due` record
to their partition; there the head is retried, and a `retried` record applies the
outcome: done (the next one goes), retry later (backoff that honours Retry-After), or
dead-lettered (a final refusal, or the window is over).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from streams.core import pending as pending_mod
from streams.core.control import Park, Retried, RetryDue
from streams.core.decision import PartnerRequest
from streams.core.pending import Parked, Pending
from streams.core.reasons import Reason
from streams.core.retry import Outcome
from streams.core.state import Readable
from streams.core.step import DeadLetter, release_ready
from streams.runtime import effects
from streams.runtime.runtime import Incoming, Runtime

log = logging.getLogger("cs_relay")

RETRY_TICK = 1.0  # seconds between looks for parked deliveries that are due
ANSWER_WAIT = 30.0  # a user asked for is not asked for again before its partition answers


def apply_park(rt: Runtime, record: Incoming, park: Park) -> list[Awaitable[Any]]:
    """In the user's partition: the delivery joins the user's parked queue."""
    key, dest = record.key.decode("utf-8"), park.destination
    parking = rt.marks.parking
    if parking[(key, dest)] > 0:
        parking[(key, dest)] -= 1
    if parking[(key, dest)] <= 0:
        del parking[(key, dest)]
    if park.released_seq is not None:
        rt.in_flight.discard((key, dest, park.released_seq))
    rt.store_pending(key, pending_mod.park(rt.pending(key), dest, park.parked, park.released_seq))
    return []


async def tick(rt: Runtime) -> None:
    """Send a `retry-due` record to each partition with users whose parked head is due."""
    if rt.retry_rescan.is_set() and rt.recovered():
        rt.retry_rescan.clear()
        # Any record it cannot read is its owner's to retry: an exception here would
        # stop the timer, and with it every retry of this worker.
        pendings = Readable(Pending.from_dict, errors=(ValueError, KeyError, TypeError))
        for key, pending in pendings.each(list(rt.tables.pending.items())):
            rt.index_retry(key, pending)  # when its retry is due, since when it waits
        if pendings.skipped:
            log.warning("retry rescan: %d pending records unreadable by this version were skipped", pendings.skipped)
    now = rt.clock()
    by_partition: dict[int, list[str]] = {}
    for key, due_at in list(rt.marks.retry_due_at.items()):
        if due_at <= now:
            by_partition.setdefault(rt.partition_of(key), []).append(key)
            rt.marks.retry_due_at[key] = now + ANSWER_WAIT  # until the partition answers (it resets this)
    for partition, keys in by_partition.items():
        await effects.control_to_partition(rt, partition, RetryDue(tuple(keys)))


def start_retries(rt: Runtime, record: Incoming, due: RetryDue) -> list[Awaitable[Any]]:
    return retry_due(rt, due.keys)


def retry_due(rt: Runtime, keys: Any) -> list[Awaitable[Any]]:
    """In the partition of `keys`: retry each due parked head once (not waited for by
    the acknowledgement: the parked record is durable whatever happens)."""
    now = rt.clock()
    for key in keys:
        pending = rt.pending(key)
        for dest, head in pending_mod.due(pending, now):
            if (key, dest, head.seq) in rt.marks.retrying or dest not in rt.clients:
                continue
            rt.marks.retrying.add((key, dest, head.seq))
            rt.chains.submit((key, dest), lambda k=key, d=dest, h=head: retry(rt, k, d, h))
        rt.index_retry(key, pending)
    return []


async def retry(rt: Runtime, key: str, dest: str, head: Parked) -> None:
    client = rt.clients[dest]
    try:
        result = await client.send(PartnerRequest.from_dict(head.request))
        rt.counters[f"retried.{dest}"] += 1
        rt.journal.delivery(key, dest, head.message_id, result.outcome, result.status, rt.clock(), retry=True)
        await effects.control_to_user(
            rt,
            key,
            Retried(
                dest,
                head.seq,
                result.outcome,
                result.attempts,
                result.status,
                effects.error_text(client, result),
                result.retry_after,
            ),
        )
    except BaseException:
        # No `retried` record will clear this retry's mark: let a later tick try again.
        rt.marks.retrying.discard((key, dest, head.seq))
        raise


def apply_retried(rt: Runtime, record: Incoming, retried: Retried) -> list[Awaitable[Any]]:
    """In the user's partition: apply a retry's outcome to the parked head."""
    key, dest, seq, outcome = record.key.decode("utf-8"), retried.destination, retried.seq, retried.outcome
    rt.marks.retrying.discard((key, dest, seq))
    before = rt.pending(key)
    head = next((p for p in before.queue(dest).parked if p.seq == seq), None)
    attempts = (head.attempts if head else 0) + retried.attempts
    pending, given_up = pending_mod.retried(
        before,
        dest,
        seq,
        outcome=outcome.value,
        error=retried.error,
        now=rt.clock(),
        delay=rt.retry_delay(attempts, retried.retry_after),
        window=rt.settings.retry_window_seconds,
        attempts=retried.attempts,
    )
    work: list[Awaitable[Any]] = []
    if outcome is Outcome.DONE:
        rt.counters[f"done.{dest}"] += 1
    if given_up is not None:
        reason = Reason.RETRIES_EXHAUSTED if outcome is Outcome.RETRY else Reason.PARTNER_REFUSED
        detail = f"{given_up.last_error} (after {given_up.attempts} attempts)"
        dead = DeadLetter(reason, detail, given_up.raw, given_up.source, "delivery", dest)
        work.append(effects.dead_letter(rt, dead, key.encode("utf-8"), status=retried.status))
    user = rt.user(key)
    destination = rt.destination(dest)
    if user is not None and destination is not None:
        pending, released = release_ready(pending, destination, user, rt.group)
        work += [effects.dispatch(rt, key, d) for d in released]
    rt.store_pending(key, pending)
    if outcome is Outcome.DONE:
        retry_due(rt, [key])  # the partner answers again: the next parked one goes now
    return work
