"""What the runtime does to the world: a step's state written and its deliveries
dispatched (`apply_step`, `dispatch`: to the user's chain, run by
`streams.runtime.senders`, or spilled past its share, `streams.runtime.spilling`), a
delivery that keeps failing parked, dead letters, control records and forwarded events.

Each returns an awaitable that the event which caused it waits for before it is
acknowledged (`streams.runtime.acks.AckTracker`): work that fails leaves the event
unacknowledged, and a restart processes it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from streams.core import control
from streams.core.control import Control, Park
from streams.core.deadletter import dead_letter_headers, identity_of
from streams.core.outcome import DeadLetter, Dispatch, Step
from streams.core.pending import Parked, Pending
from streams.core.releasing import Resend, resolve_releasing
from streams.core.state import UserState
from streams.runtime import senders as senders_mod
from streams.runtime import spilling
from streams.runtime.outbox import BY_USER, DEAD_LETTERS, produce

if TYPE_CHECKING:
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
    if any(queue.releasing for queue in before.queues.values()):
        # Released events to decide again: the user's groups (a read of the group view,
        # streams.runtime.groupview) only then.
        resend = resolve_releasing(
            before,
            result.pending,
            rt.destinations,
            result.user,
            rt.groups.of(result.user),
            lambda d, seq: (key, d, seq) in rt.sending.in_flight,
        )
    else:
        resend = Resend(result.pending, [], [], [])
    if resend.pending != before:
        rt.rows.store_pending(key, resend.pending)  # a write through the state's door
    for dest, why in resend.skipped:  # released, and the destination's rules changed since
        rt.counters[f"skipped.{dest}"] += 1
        log.info("a released event is no longer taken by %s: %s", dest, why)
    work: list[Awaitable[Any]] = []
    if result.dead_letters or resend.dead_letters:
        key_bytes = key.encode("utf-8")
        work += [dead_letter(rt, d, key_bytes) for d in (*result.dead_letters, *resend.dead_letters)]
    # What parks have been applied in this process so far (`ParkingMarks.parks`): a
    # delivery of a pair with no parked one now reads the pending row again only if a
    # park was applied since (`senders.deliver`).
    parks = rt.parking.marks.parks
    queues = resend.pending.queues
    for d in (*resend.dispatches, *result.dispatches):
        queue = queues.get(d.destination)
        work.append(dispatch(rt, key, d, parks if queue is None or not queue.parked else None))
    return work


# ---------------------------------------------------------------- deliveries


def dispatch(rt: Runtime, key: str, item: Dispatch, parks: int | None = None) -> asyncio.Future:
    """Deliver `item` after the user's earlier deliveries to the same partner (its
    chain, served by `streams.runtime.senders`, which runs `senders.deliver`); past
    the user's share, a call's delivery is spilled instead (`spilling.admit`; its work
    is then its rows' writes). One call per delivery of a step. `parks`: the count of
    parks applied (`ParkingMarks.parks`) when the user had no parked delivery for the
    partner (None: not known; `senders.deliver` reads the pending row).

    Spilling is not asked, a read of what the spill store and the senders keep, while
    the chain is under its share (`counts`, kept by the senders) and the pair has no
    spilled queue (`known`, complete once the store has read every owned partition)."""
    if item.released_seq is not None:
        rt.sending.in_flight.add((key, item.destination, item.released_seq))
    pair, store, senders = (key, item.destination), rt.spills, rt.sending.senders
    if (senders.counts[pair] >= rt.settings.user_share or not store.complete or pair in store.known) and spilling.admit(
        rt, key, item
    ):
        return spilling.written()
    return senders.submit(pair, functools.partial(senders_mod.deliver, rt, key, item, parks))


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
