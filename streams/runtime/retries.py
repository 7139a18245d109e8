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

import asyncio
import functools
import logging
from collections.abc import Awaitable
from typing import Any

from streams.core import pending as pending_mod
from streams.core import pendingrows
from streams.core.breaker import AUTH_STATUSES, State
from streams.core.control import Park, Retried, RetryDue, retry_due_records
from streams.core.decision import PartnerRequest
from streams.core.incoming import Incoming
from streams.core.outcome import DeadLetter, Step
from streams.core.pending import Parked, Pending
from streams.core.reasons import Reason
from streams.core.releasing import release_ready
from streams.core.retry import Outcome
from streams.core.versions import Readable
from streams.runtime import effects, routing, senders
from streams.runtime.runtime import Runtime
from streams.runtime.tablescan import chunks_of_partition

log = logging.getLogger("cs_relay")

RETRY_TICK = 1.0  # seconds between looks for parked deliveries that are due
RETRY_BATCH = 100  # parked deliveries of one user retried one after another while the partner accepts them
ANSWER_WAIT = 30.0  # a user asked for is not asked for again before its partition answers
RESCAN_CHUNK = 500  # pending rows read by the rescan between two turns of the event loop
RETRY_DUE_MAX_KEYS = 1000  # users per retry-due record
RETRY_DUE_MAX_BYTES = 64 * 1024  # and its size (Kafka refuses records over 1 MB by default)


def apply_park(rt: Runtime, record: Incoming, park: Park) -> list[Awaitable[Any]]:
    """In the user's partition: the delivery joins the user's parked queue."""
    assert record.key is not None  # control records to a user are keyed by the user
    key, dest = record.key.decode("utf-8"), park.destination
    rt.parking.marks.parks += 1  # the deliveries dispatched before it read their pending row (senders.deliver)
    parking = rt.parking.marks.parking
    if parking[(key, dest)] > 0:
        parking[(key, dest)] -= 1
    if parking[(key, dest)] <= 0:
        del parking[(key, dest)]
    if park.released_seq is not None:
        rt.sending.in_flight.discard((key, dest, park.released_seq))
    before = rt.rows.pending(key)
    limit = rt.settings.pending_max_events
    seq = park.seq if park.seq is not None else pending_mod.first_seq(record.position)  # the call's own, when known
    if pending_mod.parked_full(before, dest, limit, park.released_seq, seq):
        # The user's parked queue for the destination is at its bound: this delivery
        # cannot wait behind it (the index row would grow without end during a long
        # outage of a busy user). It goes to the dead-letter topic, to replay later.
        if park.released_seq is not None:
            rt.rows.store_pending(key, pendingrows.without(before, [(dest, park.released_seq)]))
        detail = (
            f"more than {limit} deliveries to {dest} parked for this user (CS_RELAY_PENDING_MAX_EVENTS); "
            f"last error: {park.parked.last_error or 'none'}"
        )
        number = park.released_seq if park.released_seq is not None else seq
        letter = DeadLetter(
            Reason.PENDING_OVERFLOW, detail, park.parked.raw, park.parked.source, "delivery", dest, f"{dest}#{number}"
        )
        return [effects.dead_letter(rt, letter, record.key)]
    parked = pending_mod.park(before, dest, park.parked, park.released_seq, seq)
    rt.rows.store_pending(key, parked)
    return []


async def tick(rt: Runtime) -> None:
    """Send a `retry-due` record to each partition with users whose parked head is due."""
    if rt.parking.marks.wants_rescan():  # users with parked deliveries were left out of the index
        rt.parking.rescan.set()
    if rt.parking.rescan.is_set() and rt.recovered():
        rt.parking.rescan.clear()
        await rescan(rt)
    now = rt.clock()
    watch_breakers(rt, now)
    by_partition: dict[int, list[str]] = {}
    for key, due_at in list(rt.parking.marks.retry_due_at.items()):
        if due_at <= now:
            by_partition.setdefault(rt.partition_of(key), []).append(key)
            rt.parking.marks.retry_due_at[key] = now + ANSWER_WAIT  # until the partition answers (it resets this)
    for partition, keys in by_partition.items():
        for record in retry_due_records(keys, max_keys=RETRY_DUE_MAX_KEYS, max_bytes=RETRY_DUE_MAX_BYTES):
            try:
                await effects.control_to_partition(rt, partition, record)
            except BaseException:
                # Not asked: due again at the next tick, not after ANSWER_WAIT (the timer
                # logs the failure: streams.runtime.timers).
                for key in record.keys:
                    if key in rt.parking.marks.retry_due_at:
                        rt.parking.marks.retry_due_at[key] = now
                raise


async def rescan(rt: Runtime) -> None:
    """After an assignment: index every pending record of the partitions assigned here
    (when its retry is due, since when it waits, the counts of /status), read from the
    store RESCAN_CHUNK rows at a time with a turn of the event loop between chunks, so
    that a large table does not stop every other task while it is read. Each chunk is
    read when its turn comes (a handler may have written its rows meanwhile). A new
    assignment during the scan stops it: the next tick scans again. Any record it
    cannot read is its owner's to retry: an exception here would stop the timer, and
    with it every retry."""
    pendings = Readable(pendingrows.index_only, errors=(ValueError, KeyError, TypeError))
    counts = rt.rows.pending_counts
    rt.parking.marks.rescan_begins()
    for partition in sorted(rt.owned):
        counts.scan_begins(partition)
        for chunk in chunks_of_partition(rt.tables.pending, partition, rt.partition_of, RESCAN_CHUNK):
            for key, pending in pendings.each(chunk):
                rt.parking.index_retry(key, pending)
                counts.scanned(partition, key, pending)
            await asyncio.sleep(0)
            if rt.parking.rescan.is_set():
                return
        counts.scan_ends(partition)
    if pendings.skipped:
        log.warning("retry rescan: %d pending records unreadable by this version were skipped", pendings.skipped)


def watch_breakers(rt: Runtime, now: float) -> None:
    """An error line a minute for each paused destination; and when a destination's
    breaker has closed, its parked deliveries are due now, not at their backoff."""
    for dest, breaker in rt.sending.breakers.items():
        if breaker.pause_report_due(now):
            log.error(
                "%s refuses cs-relay's credentials (%s): paused since %.0f s, its deliveries are parked; "
                "a probe request goes every %.0f s",
                dest,
                breaker.last_reason,
                now - (breaker.since or now),
                breaker.policy.pause_seconds,
            )
    if rt.sending.breakers.closed_since_last_look():
        for key in rt.parking.marks.retry_due_at:
            rt.parking.marks.retry_due_at[key] = min(rt.parking.marks.retry_due_at[key], now)


def start_retries(rt: Runtime, record: Incoming, due: RetryDue) -> list[Awaitable[Any]]:
    return retry_due(rt, due.keys)


def retry_due(rt: Runtime, keys: Any) -> list[Awaitable[Any]]:
    """In the partition of `keys`: retry each due parked head once (not waited for by
    the acknowledgement: the parked record is durable whatever happens)."""
    now = rt.clock()
    for key in keys:
        pending = rt.rows.pending(key)
        waits = []
        for dest, head in due(rt, pending, now):
            if (key, dest, head.seq) in rt.parking.marks.retrying or dest not in rt.clients:
                continue
            breaker = rt.sending.breakers[dest]
            if not breaker.may_probe(now):  # backed off as a whole: not before it lets one through
                waits.append(breaker.wait(now))
                continue
            rt.parking.marks.retrying.add((key, dest, head.seq))
            rt.sending.senders.submit((key, dest), functools.partial(retry, rt, key, dest, head))
        rt.parking.index_retry(key, pending)
        if waits:
            rt.parking.marks.postpone(key, now + max(RETRY_TICK, min(waits)))
    return []


def due(rt: Runtime, pending: Pending, now: float) -> list[tuple[str, Parked]]:
    """The parked heads to retry now: those whose time has come, and those parked
    before their destination's breaker last closed (the partner is back: no need to
    wait out a backoff that was sized for its outage)."""
    out = []
    for dest, queue in pending.queues.items():
        if not queue.parked:
            continue
        head, breaker = queue.parked[0], rt.sending.breakers[dest]
        recovered = breaker.state is State.CLOSED and breaker.since is not None and head.first_failed_at < breaker.since
        if head.next_at <= now or recovered:
            out.append((dest, head))
    return out


async def retry(rt: Runtime, key: str, dest: str, head: Parked) -> None:
    """Retry the parked head, then, while the partner accepts them, the user's next
    parked deliveries to it (up to RETRY_BATCH), each outcome in its own `retried`
    record: a recovered partner's backlog drains at its speed, not one Kafka round trip
    per delivery. They are marked as being retried first, so that applying an outcome
    does not start another retry of the next one."""
    parked = rt.rows.pending(key).queue(dest).parked
    start = next((i for i, p in enumerate(parked) if p.seq == head.seq), None)
    batch = [head] if start is None else list(parked[start : start + RETRY_BATCH])
    for item in batch[1:]:
        if (key, dest, item.seq) in rt.parking.marks.retrying:
            batch = batch[: batch.index(item)]
            break
    rt.parking.marks.retrying.update((key, dest, item.seq) for item in batch)
    answered: set[int] = set()
    try:
        for item in batch:
            if not rt.sending.breakers[dest].allow(rt.clock()):
                if item is head:  # another probe went first: ask again when this one may go
                    rt.parking.marks.postpone(
                        key, rt.clock() + max(RETRY_TICK, rt.sending.breakers[dest].wait(rt.clock()))
                    )
                break
            outcome = await retry_one(rt, key, dest, item)
            answered.add(item.seq)
            if outcome is not Outcome.DONE:
                break
    finally:
        # No `retried` record will clear these marks: let a later tick try them.
        rt.parking.marks.retrying.difference_update((key, dest, item.seq) for item in batch if item.seq not in answered)


async def retry_one(rt: Runtime, key: str, dest: str, item: Parked) -> Outcome:
    client = rt.clients[dest]
    result = await senders.send_bounded(rt, dest, PartnerRequest.from_dict(item.request))
    outcome, retry_after = result.outcome, result.retry_after
    if result.status in AUTH_STATUSES:
        breaker = rt.sending.breakers[dest]
        if breaker.refused_alone(item.first_failed_at):
            outcome = Outcome.FAIL  # others get through: this call's own refusal
        else:
            outcome, retry_after = Outcome.RETRY, max(retry_after or 0.0, breaker.wait(rt.clock())) or None
    rt.counters[f"retried.{dest}"] += 1
    rt.observer.delivery(key, dest, item.message_id, outcome, result.status, rt.clock(), retry=True)
    record = Retried(
        dest, item.seq, outcome, result.attempts, result.status, senders.error_text(client, result), retry_after
    )
    await effects.control_to_user(rt, key, record)
    return outcome


def apply_retried(rt: Runtime, record: Incoming, retried: Retried) -> list[Awaitable[Any]]:
    """In the user's partition: apply a retry's outcome to the parked head."""
    assert record.key is not None  # control records to a user are keyed by the user
    key, dest, seq, outcome = record.key.decode("utf-8"), retried.destination, retried.seq, retried.outcome
    rt.parking.marks.retrying.discard((key, dest, seq))
    before = rt.rows.pending(key)
    head = next((p for p in before.queue(dest).parked if p.seq == seq), None)
    attempts = (head.attempts if head else 0) + retried.attempts
    pending, given_up = pending_mod.retried(
        before,
        dest,
        seq,
        outcome=outcome.value,
        error=retried.error,
        now=rt.clock(),
        delay=rt.sending.retry_delay(attempts, retried.retry_after),
        window=rt.settings.retry_window_seconds,
        attempts=retried.attempts,
    )
    work: list[Awaitable[Any]] = []
    if outcome is Outcome.DONE:
        rt.counters[f"done.{dest}"] += 1
    if given_up is not None:
        reason = Reason.RETRIES_EXHAUSTED if outcome is Outcome.RETRY else Reason.PARTNER_REFUSED
        detail = f"{given_up.last_error} (after {given_up.attempts} attempts)"
        dead = DeadLetter(reason, detail, given_up.raw, given_up.source, "delivery", dest, f"{dest}#{given_up.seq}")
        work.append(effects.dead_letter(rt, dead, key.encode("utf-8"), status=retried.status))
    user = rt.rows.user(key)
    destination = rt.destination(dest)
    if user is None or destination is None:
        rt.rows.store_pending(key, pending)
    else:
        retried_pending = pending
        pending, released = release_ready(
            pending, destination, user, rt.groups.of(user), rt.settings.pending_max_events
        )
        if pending == retried_pending:
            rt.rows.store_pending(key, pending)  # (apply_step writes only what differs from `retried_pending`)
        # As after a call, the released events no delivery in this process carries are
        # sent again: this record handled again (a revoke or a crash stopped its first
        # handling's deliveries) finds in `releasing` what that one released.
        work += routing.apply_step(rt, key, retried_pending, Step(user, None, pending, released))
    if outcome is Outcome.DONE:
        retry_due(rt, [key])  # the partner answers again: the next parked one goes now
    return work
