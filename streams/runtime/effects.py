"""What the runtime does to the world: deliver to a partner, park a delivery that
keeps failing, dead-letter, and produce control records and forwarded events.

Each returns an awaitable that the event which caused it waits for before it is
acknowledged (`streams.runtime.acks.AckTracker`): work that fails leaves the event
unacknowledged, and a restart processes it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from streams.core import control
from streams.core.breaker import AUTH_STATUSES
from streams.core.control import Control, Park, PendingDone
from streams.core.deadletter import dead_letter_headers, identity_of
from streams.core.decision import PartnerRequest
from streams.core.outcome import DeadLetter, Dispatch, Step
from streams.core.pending import Parked, Pending
from streams.core.reasons import Reason
from streams.core.releasing import resolve_releasing
from streams.core.retry import Outcome
from streams.core.state import UserState
from streams.runtime import spilling
from streams.runtime.delivery import PartnerClient, Result
from streams.runtime.outbox import BY_USER, DEAD_LETTERS, produce
from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

# A dead letter keeps the original bytes; when the dead-letter topic refuses them for
# their size, their head is kept instead (and the record says so).
DLQ_TRUNCATED_BYTES = 64 * 1024
DLQ_SEND_ATTEMPTS = 8
_UNREAD = object()  # apply_step: the user's row not read by the caller


# ---------------------------------------------------------------- records


async def control_to_user(rt: Runtime, key: str, record: Control) -> None:
    """A control record to the partition that owns `key` (its state can only be
    written there)."""
    value, headers = control.encode(record)
    await produce(rt.outbox, BY_USER, key=key.encode("utf-8"), value=value, headers=headers)


async def control_to_partition(rt: Runtime, partition: int, record: Control) -> None:
    """A control record for a whole by-user partition (empty key)."""
    value, headers = control.encode(record)
    await produce(rt.outbox, BY_USER, key=b"", value=value, headers=headers, partition=partition)


async def forward(rt: Runtime, key: str, raw: bytes, headers: Mapping[str, bytes]) -> None:
    await produce(rt.outbox, BY_USER, key=key.encode("utf-8"), value=raw, headers=dict(headers))


async def dead_letter(rt: Runtime, dead: DeadLetter, key: bytes | None = None, *, status: int | None = None) -> None:
    rt.counters[f"dead_lettered.{dead.stage}.{dead.reason}"] += 1
    rt.observer.dead_lettering(dead)
    log.warning(
        "dead letter (%s, %s%s): %s",
        dead.stage,
        dead.reason,
        f", {dead.destination}" if dead.destination else "",
        dead.detail,
    )
    headers = dead_letter_headers(
        reason=dead.reason,
        detail=dead.detail,
        stage=dead.stage,
        source=dead.source,
        destination=dead.destination,
        status=status,
        secrets=rt.settings.secrets(),
        ident=identity_of(key, dead.ident) if key is not None and dead.ident is not None else None,
    )
    value = dead.raw.encode("utf-8") if isinstance(dead.raw, str) else dead.raw
    for attempt in range(1, DLQ_SEND_ATTEMPTS + 1):
        try:
            await produce(rt.outbox, DEAD_LETTERS, key=key, value=value, headers=headers)
            rt.observer.dead_lettered(rt.clock())
            return
        except Exception as exc:  # noqa: BLE001 - Faust wraps the aiokafka error
            if too_large(exc) and len(value) > DLQ_TRUNCATED_BYTES:
                # Kafka refuses the original bytes on the dead-letter topic (its size
                # limit is lower than the input's): keep the head, say so, and log it.
                log.error(
                    "dead letter of %d bytes is too large for %s; keeping its first %d bytes",
                    len(value),
                    rt.settings.dlq_topic,
                    DLQ_TRUNCATED_BYTES,
                )
                headers = {**headers, "cs-relay-truncated-from": str(len(value)).encode()}
                value = value[:DLQ_TRUNCATED_BYTES]
                continue
            if attempt == DLQ_SEND_ATTEMPTS:
                raise  # the event stays unacknowledged: a restart processes it again
            log.warning("dead-letter topic refused a record (%r); retrying", exc)
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt))


def too_large(exc: BaseException | None) -> bool:
    """Whether Kafka refused a record for its size (Faust wraps aiokafka's error)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


# ---------------------------------------------------------------- a step's state and work


def apply_step(
    rt: Runtime, key: str, before: Pending, result: Step, stored: UserState | None | object = _UNREAD
) -> list[Awaitable[Any]]:
    """Write a step's state (assigned back, so the changelog has it) and start its work:
    dead letters, deliveries, and the released events that no delivery in this process
    is carrying (after a restart, `releasing` may hold events whose delivery died with
    the previous process: they are sent again rather than lost). `stored`: the user's
    row as the caller read it for the step, if it did (not read again)."""
    if stored is _UNREAD:
        stored = rt.rows.user(key)  # written only when it changed (last_seen moves once a minute)
    if result.user is not stored and result.user != stored:
        rt.tables.users[key] = result.user.to_dict()
    resend = resolve_releasing(
        before,
        result.pending,
        rt.destinations,
        result.user,
        rt.groups.of(result.user),
        lambda d, seq: (key, d, seq) in rt.sending.in_flight,
    )
    if resend.pending != before:
        rt.rows.store_pending(key, resend.pending)
    for dest, why in resend.skipped:  # released, and the destination's rules changed since
        rt.counters[f"skipped.{dest}"] += 1
        log.info("a released event is no longer taken by %s: %s", dest, why)
    key_bytes = key.encode("utf-8")
    work: list[Awaitable[Any]] = [dead_letter(rt, d, key_bytes) for d in (*result.dead_letters, *resend.dead_letters)]
    work += [dispatch(rt, key, d) for d in (*resend.dispatches, *result.dispatches)]
    return work


# ---------------------------------------------------------------- deliveries


def dispatch(rt: Runtime, key: str, item: Dispatch) -> asyncio.Future:
    """Deliver `item` after the user's earlier deliveries to the same partner; past the
    user's share, a call's delivery is spilled instead (streams.runtime.spilling)."""
    if item.released_seq is not None:
        rt.sending.in_flight.add((key, item.destination, item.released_seq))
    return spilling.dispatched(rt, key, item, functools.partial(deliver, rt, key, item))


async def deliver(rt: Runtime, key: str, item: Dispatch) -> Result | None:
    rt.observer.delivering(item.message_id)
    client = rt.clients[item.destination]
    if rt.parking.catching_up(key, item.destination):
        # This worker has not yet read all that an earlier owner left in the partition, and
        # a park or pending-done record of this user and partner may lie ahead of it
        # (streams.runtime.catchup). The senders held this delivery aside for it, at most
        # the delivery deadline and not under back-pressure (`Parking.hold`): it still
        # may, so it parks (its record behind every earlier one in the log).
        rt.counters[f"parked_catching_up.{item.destination}"] += 1
        error = "read before its partition caught up with an earlier owner's records; not called"
        await park(rt, key, item, attempts=0, error=error, retry_after=None)
        return None
    if item.released_seq is not None and not _releasing(rt, key, item):
        # Confirmed, parked or handed over meanwhile (an earlier owner's record, a merge).
        rt.sending.in_flight.discard((key, item.destination, item.released_seq))
        return None
    if rt.parking.marks.parking[(key, item.destination)] > 0 or rt.rows.pending(key).queue(item.destination).parked:
        # An earlier delivery of this user to this partner is parked, or on its way to
        # be: park this one behind it rather than overtake it.
        await park(rt, key, item, attempts=0, error="waiting behind a parked delivery", retry_after=None)
        return None
    breaker = rt.sending.breakers[item.destination]
    if not breaker.allow(rt.clock()):
        # The destination is backed off as a whole (streams.core.breaker): park at once,
        # due when the breaker lets a request through again, without asking it.
        rt.counters[f"held_back.{item.destination}"] += 1
        error = f"{client.name}: circuit {breaker.state} after {breaker.last_reason}; not called"
        await park(rt, key, item, attempts=0, error=error, retry_after=breaker.wait(rt.clock()) or None)
        return None
    result = await send_bounded(rt, item.destination, item.request)
    rt.counters[f"{result.outcome.value}.{item.destination}"] += 1
    rt.observer.delivery(key, item.destination, item.message_id, result.outcome, result.status, rt.clock())
    if result.outcome is Outcome.RETRY or result.status in AUTH_STATUSES:
        # A 401/403 parks too: most likely the destination refuses the key for every
        # request (its breaker pauses it); a retry refused again after other requests
        # succeeded is this call's own refusal (streams.runtime.retries.retry).
        retry_after = max(result.retry_after or 0.0, breaker.wait(rt.clock())) or None
        await park(rt, key, item, attempts=result.attempts, error=error_text(client, result), retry_after=retry_after)
        return result
    if result.outcome is Outcome.FAIL:
        await dead_letter(
            rt,
            DeadLetter(
                Reason.PARTNER_REFUSED if client.classify(result.status) is Outcome.FAIL else Reason.RETRIES_EXHAUSTED,
                error_text(client, result),
                item.raw,
                item.source,
                "delivery",
                item.destination,
                _numbered(item),
            ),
            key.encode("utf-8"),
            status=result.status,
        )
    if item.released_seq is not None:
        # Confirm in the user's own partition, so the changelog write is local to the key.
        await control_to_user(rt, key, PendingDone(item.destination, item.released_seq))
    return result


def _numbered(item: Dispatch) -> str | None:
    number = item.released_seq if item.released_seq is not None else item.seq
    return None if number is None else f"{item.destination}#{number}"


def _releasing(rt: Runtime, key: str, item: Dispatch) -> bool:
    return any(i.seq == item.released_seq for i in rt.rows.pending(key).queue(item.destination).releasing)


async def send_bounded(rt: Runtime, destination: str, request: PartnerRequest) -> Result:
    """`PartnerClient.send` within `CS_RELAY_DELIVERY_DEADLINE`, its answers told to
    the destination's breaker: a delivery never holds its event longer than that
    (a second to spare for the client's own budget), whatever the partner does."""
    deadline = rt.settings.delivery_deadline

    def on_answer(outcome: Outcome, status: int | None, retry_after: float | None) -> bool:
        return rt.sending.answered(destination, outcome, status, retry_after)

    try:
        # asyncio.timeout, not wait_for: no task of its own per request (Python 3.11).
        async with asyncio.timeout(deadline + 1.0):
            return await rt.clients[destination].send(request, budget=deadline, on_answer=on_answer)
    except TimeoutError:
        rt.sending.answered(destination, Outcome.RETRY, None, None)
        return Result(Outcome.RETRY, None, 1, f"no answer within {deadline:g} s", deadline)


def error_text(client: PartnerClient, result: Result) -> str:
    if result.status is not None:
        return f"{client.name} answered {result.status}: {result.excerpt}"
    return f"{client.name}: {result.excerpt}"


async def park(rt: Runtime, key: str, item: Dispatch, *, attempts: int, error: str, retry_after: float | None) -> None:
    """Carry a delivery that failed in a retryable way to the user's parked queue
    (`streams.runtime.retries`), with a `park` record to the user's partition."""
    rt.parking.marks.parking[(key, item.destination)] += 1  # before any await: the chain's next item sees it
    rt.counters[f"parked.{item.destination}"] += 1
    now = rt.clock()
    parked = Parked(
        0,
        item.raw,
        item.source,
        item.request.to_dict(),
        item.message_id,
        first_failed_at=now,
        attempts=attempts,
        next_at=now + rt.sending.retry_delay(attempts, retry_after),
        last_error=error,
    )
    log.warning("parked a delivery to %s for retry (message %s): %s", item.destination, item.message_id, error)
    await control_to_user(rt, key, Park(item.destination, item.released_seq, parked, item.seq))
