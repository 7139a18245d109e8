"""The two reading loops, `intake` (input topic) and `route` (by-user topic).

Both read without automatic acknowledgement (`stream.noack()`) and register each event
with the work it started (`Runtime.acks`): an event is acknowledged once that work has
finished and every earlier event of its partition has been, so a commit never passes
unfinished work. Faust agents with concurrency > 1 could (faust issue 606).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import replace
from typing import Any, cast

import faust

from streams.core.deadletter import REPLAY_DESTINATION_HEADER, REPLAY_HEADER, REPLAY_OF_HEADER
from streams.core.message import InvalidMessage, Message
from streams.core.outcome import DeadLetter
from streams.core.reasons import Reason
from streams.core.segment import parse
from streams.runtime import effects, handlers
from streams.runtime.incoming import SOURCE_HEADER, Incoming
from streams.runtime.outbox import BY_USER
from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

MAX_UNACKED_EVENTS = 5000  # beyond this, the reading loops wait (back-pressure); and
# beyond CS_RELAY_MAX_UNACKED_BYTES of records held by unacknowledged events (`held_bytes`)
EVENT_BYTES = 2048  # what an unacknowledged event keeps besides its record's bytes (measured: bench/memusers.py)
REPLAY_HEADERS = (REPLAY_HEADER, REPLAY_DESTINATION_HEADER, REPLAY_OF_HEADER)


async def intake(rt: Runtime, app: faust.App, stream: faust.StreamT) -> None:
    """Validate each raw record; re-key the good ones by user, dead-letter the rest.
    An input record is acknowledged once Kafka has taken what it became. With
    CS_RELAY_INPUT_KEYED_BY_USER a record already in its user's partition is routed
    where it is (`take_keyed`), and acknowledged as a by-user record would be."""
    keyed = rt.settings.input_keyed_by_user
    async for event, record in fresh_events(rt, app, stream):
        try:
            work = await take_keyed(rt, record) if keyed else [await admit(rt, record)]
        except Exception as exc:  # noqa: BLE001 - the producer refused the record
            # Registered all the same, as work that failed: never acknowledged (no commit
            # passes it) and the worker stops (Runtime.failed_for_good).
            work = [failed(exc)]
        rt.acks.add(record.tp, event.ack, work, held_bytes(record))


def held_bytes(record: Incoming) -> int:
    """About what an unacknowledged event keeps alive until it is acknowledged: its
    record's value twice (the bytes, in Faust's event and in `record` alike, and the text
    its work decodes from them and keeps), key and headers, and EVENT_BYTES of objects
    around them (the event, its message, the work's futures). Measured with tracemalloc
    (bench/memusers.py): 21.6 KB besides the value per event of 20 KB, 1.6 KB per event
    of 100 bytes."""
    size = EVENT_BYTES + 2 * len(record.value) + len(record.key or b"")
    for name, value in record.headers.items():
        size += len(name) + len(value)
    return size


def failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


async def fresh_events(rt: Runtime, app: faust.App, stream: faust.StreamT) -> AsyncIterator[tuple[Any, Incoming]]:
    """The stream's events, unacknowledged, past back-pressure, and without those a
    rebalance took away or this assignment has taken already."""
    # An agent's stream is a faust.Stream; StreamT, the type agents declare, lacks noack().
    async for event in cast(faust.Stream, stream).noack().events():
        await rt.acks.wait_below(MAX_UNACKED_EVENTS, rt.settings.max_unacked_bytes)
        if fetched_before_a_rebalance(rt, app, event):
            continue
        record = incoming(event)
        if not rt.redeliveries.first_time(record.tp, record.offset):
            continue  # taken already in this assignment (see Redeliveries)
        yield event, record


async def admit(rt: Runtime, record: Incoming) -> Awaitable[Any]:
    """One input record: what it becomes on the by-user topic, or its dead letter."""
    try:
        msg = parse(record.value)
    except InvalidMessage as exc:
        return invalid(rt, record, exc)
    return await rekey(rt, record, msg)


def invalid(rt: Runtime, record: Incoming, exc: InvalidMessage) -> Awaitable[Any]:
    return effects.dead_letter(
        rt, DeadLetter(exc.reason, exc.detail, record.value, record.source, "intake"), key=record.key
    )


async def take_keyed(rt: Runtime, record: Incoming) -> list[Awaitable[Any]]:
    """CS_RELAY_INPUT_KEYED_BY_USER: an input record in its user's partition is routed
    there, from the input topic (no hop through the by-user topic: the partition
    counts match, checked at start-up by streams.runtime.topics, so the worker that
    reads it owns the user's rows). One that is not (a producer that keyed it
    otherwise) is re-keyed as without the setting: its user's state is elsewhere."""
    try:
        msg = parse(record.value)
    except InvalidMessage as exc:
        return [invalid(rt, record, exc)]
    if rt.partition_of(msg.key) != record.partition:
        rt.counters["rekeyed"] += 1
        return [await rekey(rt, record, msg)]
    rt.counters[f"in.{msg.type}"] += 1
    # The state numbers it apart from by-user records (streams.core.positions); only the
    # headers intake would carry are kept: an input record's own cannot pose as a
    # control record or claim another source.
    headers = {k: v for k, v in record.headers.items() if k in REPLAY_HEADERS}
    headers[SOURCE_HEADER] = json.dumps(record.source).encode()  # kept by what it becomes (forwards)
    here = replace(record, key=msg.key.encode("utf-8"), headers=headers, from_input=True)
    return route_one(rt, here, msg)


async def rekey(rt: Runtime, record: Incoming, msg: Message) -> Awaitable[Any]:
    """`record` to the by-user topic, keyed by its user."""
    rt.counters[f"in.{msg.type}"] += 1
    headers = {k: v for k, v in record.headers.items() if k in REPLAY_HEADERS}
    headers[SOURCE_HEADER] = json.dumps(record.source).encode()
    # Hand the record to the producer here, in input order (a user's records must reach
    # the by-user topic in the order they came); only Kafka's acknowledgement is
    # awaited in the background.
    return await rt.outbox.send(BY_USER, key=msg.key.encode("utf-8"), value=record.value, headers=headers)


async def route(rt: Runtime, app: faust.App, stream: faust.StreamT) -> None:
    """Apply each user's messages to their state, in order; deliver concurrently."""
    async for event, record in fresh_events(rt, app, stream):
        rt.acks.add(record.tp, event.ack, route_one(rt, record), held_bytes(record))


def route_one(rt: Runtime, record: Incoming, msg: Message | None = None) -> list[Awaitable[Any]]:
    """Handle one by-user record (or, given its parsed `msg`, a Segment call from the
    input topic): its work, and the changelog writes it made (the event is
    acknowledged only once Kafka has them: `streams.runtime.changelog`)."""
    with rt.changelog.during() as writes:
        work = handle_safely(rt, record, msg)
    return [*work, *writes]


def handle_safely(rt: Runtime, record: Incoming, msg: Message | None = None) -> list[Awaitable[Any]]:
    try:
        return handlers.handle(rt, record) if msg is None else handlers.route_call(rt, record, msg)
    except Exception:  # a bug must not stop every other user's events
        log.exception("routing failed for an event at %s; it goes to the dead-letter topic", record.source)
        dead = DeadLetter(
            Reason.ROUTING_ERROR,
            "cs-relay could not route this event (see the worker log)",
            record.value,
            record.source,
            "routing",
        )
        return [effects.dead_letter(rt, dead)]


def fetched_before_a_rebalance(rt: Runtime, app: faust.App, event: faust.EventT) -> bool:
    """Whether a rebalance has begun since `event` was fetched; if so it is left alone
    (not handled, not acknowledged) and whoever owns its partition now reads it again
    from the committed offset.

    Faust checks this when a stream hands out an event, but the agents may then wait
    (back-pressure) before handling it, and `stream_wait_empty` is off so that a
    rebalance does not wait for partner deliveries. An event handled after its partition
    was revoked would write the user's state to the changelog after the new owner had
    restored it: a stale record that a later take-over restores (seen in
    tests/test_faults_scale.py as users whose group move was missing from their state)."""
    if app.flow_control.is_active() and event.message.generation_id == app.consumer_generation_id:
        return False
    rt.counters["left_after_rebalance"] += 1
    return True


def incoming(event: faust.EventT) -> Incoming:
    message = event.message
    value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    return Incoming(
        key=event.key if isinstance(event.key, bytes) else None,
        value=value,
        headers=_headers(event.headers),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )


def _headers(headers: Any) -> dict[str, bytes]:
    headers = headers or {}
    if isinstance(headers, Mapping):
        return {k: v for k, v in headers.items()}
    return {k: v for k, v in headers}
