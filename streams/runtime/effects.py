"""What the runtime does to the world off a track's common path (a track's own state
and deliveries are the routing door's, streams.runtime.routing): a delivery that keeps
failing parked, dead letters, control records and forwarded events.

Each returns an awaitable that the event which caused it waits for before it is
acknowledged (`streams.runtime.acks.AckTracker`): work that fails leaves the event
unacknowledged, and a restart processes it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from streams.core import control
from streams.core.control import Control, Park
from streams.core.deadletter import dead_letter_headers, identity_of
from streams.core.outcome import DeadLetter, Dispatch
from streams.core.pending import Parked
from streams.runtime.outbox import BY_USER, DEAD_LETTERS, produce

if TYPE_CHECKING:
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

# A dead letter keeps the original bytes; when the dead-letter topic refuses them for
# their size, their head is kept instead (and the record says so).
DLQ_TRUNCATED_BYTES = 64 * 1024
DLQ_SEND_ATTEMPTS = 8


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


# ---------------------------------------------------------------- deliveries


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
