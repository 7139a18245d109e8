"""Micro-batches inside the agent: what the stream has buffered, handled together.

`batches(rt, app, stream)` waits for the stream's next event, then takes the events
already in the stream's buffer behind it (Faust's channel queue: fetched, not yet
handed out), up to MAX_BATCH, without waiting for more: a batch is what is there, so
an idle topic adds no latency. With Faust's own fetch loop, the worker's, which hands
the event loop to the agent after each record, a batch is about one event; the loop of
streams.runtime.faust_drain (patch 4 of streams.runtime.faust_fixes, not installed: a
two-worker benchmark stalled with it) hands a fetched batch over at once, about 64
events a batch under a backlog. Per batch, not per event: the back-pressure wait
(`AckTracker.wait_below`), and then, once the wait is over, each event is checked
against a rebalance begun since it was fetched (`fetched_before_a_rebalance`) and
against this assignment's redeliveries, and left out if either says so.

`handle(rt, batch, step)` runs `step(record)` (synchronous: the pure step and its state
reads and writes, per event as before) for each event, that event made Faust's current
event first (`as_current`: Faust's tables read and write the partition of the current
event, which the stream leaves at the batch's last), inside one changelog scope
(`ChangelogWrites.during`), and registers every event with its own work and the
batch's changelog writes (`written`): an event is acknowledged, in offset order per
partition (`AckTracker`), once its work has finished and Kafka has every changelog
write of its batch. A batch may span partitions; each partition's events keep their
order and each is acknowledged on its own. Work is registered in offset order, so the
tasks the step started run in that order. A write Kafka refuses fails every event of
the batch (none is acknowledged, the worker stops and they are redone: at least once).

A step that raises is the event's alone: `handle_safely` dead-letters it and the batch
goes on (streams.runtime.agents).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.streams import _current_event

from streams.runtime.incoming import Incoming
from streams.runtime.inflight import Event
from streams.runtime.runtime import Runtime

MAX_BATCH = (
    64  # events per batch at most: a batch is handled without a turn of the event loop (about 20 ms at 300 us an event)
)
MAX_UNACKED_EVENTS = 5000  # beyond this, the reading loops wait (back-pressure); and
# beyond CS_RELAY_MAX_UNACKED_BYTES of records held by unacknowledged events (`held_bytes`)
EVENT_BYTES = 2048  # what an unacknowledged event keeps besides its record's bytes (measured: bench/memusers.py)

Taken = list[tuple[Any, Incoming]]
Work = list[Awaitable[Any]]


async def batches(rt: Runtime, app: faust.App, stream: faust.StreamT) -> AsyncIterator[Taken]:
    """The stream's events, unacknowledged, a batch at a time, past back-pressure, and
    without those a rebalance took away or this assignment has taken already."""
    # An agent's stream is a faust.Stream; StreamT, the type agents declare, lacks noack().
    events = cast(faust.Stream, stream).noack()
    it = events.events().__aiter__()
    ready: Callable[[], bool] | None = None
    while True:
        try:
            taken = [await it.__anext__()]
        except StopAsyncIteration:
            return
        ready = ready or _next_ready(events, app)
        while len(taken) < MAX_BATCH and ready():
            taken.append(await it.__anext__())  # in the buffer, and the stream hands it out at once
        rt.counters["batches"] += 1
        await rt.acks.wait_below(MAX_UNACKED_EVENTS, rt.settings.max_unacked_bytes)
        fresh = fresh_records(rt, app, taken)
        if fresh:
            yield fresh


def _next_ready(stream: Any, app: faust.App) -> Callable[[], bool]:
    """Whether the stream's buffer (Faust's channel queue) holds an event that the
    stream hands out without waiting: one fetched in this generation, while the flow
    is on. Any other (a record fetched before a rebalance, which the stream skips) ends
    the batch: taking it would wait for the next record, and with the batch unhandled,
    on an idle partition, for ever. False for a stream without a buffer."""
    buffer = getattr(getattr(getattr(stream, "channel", None), "queue", None), "_queue", None)
    if buffer is None:
        return lambda: False

    def ready() -> bool:
        if not buffer:
            return False
        message = getattr(buffer[0], "message", None)
        return (
            message is not None and message.generation_id == app.consumer_generation_id and app.flow_control.is_active()
        )

    return ready


def fresh_records(rt: Runtime, app: faust.App, taken: list[Any]) -> Taken:
    """The events of `taken` with their records, but those a rebalance took away and
    those taken already in this assignment (see Redeliveries: asked once per batch)."""
    kept = [(event, incoming(event)) for event in taken if not fetched_before_a_rebalance(rt, app, event)]
    if not kept:
        return kept
    first = rt.acks.redeliveries.first_times([(record.tp, record.offset) for _, record in kept])
    return [pair for pair, new in zip(kept, first, strict=True) if new]


def handle(rt: Runtime, batch: Taken, step: Callable[[Incoming], Work]) -> None:
    """Each event's `step` in one changelog scope; every event registered with its work
    and its batch's changelog writes."""
    works: list[Work] = []
    with rt.changelog.during() as writes:
        for event, record in batch:
            as_current(event)
            works.append(step(record))
    register(rt, batch, works, written(writes))


def as_current(event: Any) -> None:
    """Make `event` Faust's current event (`faust.current_event()`), as the stream does
    when it hands one out. Faust's tables read and write the rows, and send the
    changelog records, of the current event's partition (`Table.partition_for_key`, the
    RocksDB store's `_get` and `_set`): once a batch is taken that is its last event's,
    and an earlier event of another partition would read and write that partition's."""
    _current_event.set(weakref.ref(event))


def register(rt: Runtime, batch: Taken, works: Sequence[Work], also: asyncio.Future[Any] | None) -> None:
    """Every event of the batch registered at once (`AckTracker.add_batch`): its own
    work, and the batch's changelog writes (`also`), watched once for the batch."""
    events: list[Event] = []
    for (event, record), work in zip(batch, works, strict=True):
        as_current(event)  # its work's tasks start in its context, as they did from its step
        events.append((record.tp, event.ack, [asyncio.ensure_future(w) for w in work], held_bytes(record)))
    rt.acks.add_batch(events, also)


def written(writes: Sequence[Awaitable[Any]]) -> asyncio.Future[Any] | None:
    """One future for a batch's changelog writes: done once all are, failed with the
    first that fails, cancelled if one is cancelled (its partition revoked); None for a
    batch that wrote nothing. A packed dedupe row is among them once, however many of
    the batch's events joined it."""
    futures = list({id(f): f for f in map(asyncio.ensure_future, writes)}.values())
    if not futures:
        return None
    if len(futures) == 1:
        return futures[0]
    joined: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    left = [len(futures)]

    def one_done(f: asyncio.Future[Any]) -> None:
        if joined.done():
            return
        if f.cancelled():
            joined.cancel()
        elif (exc := f.exception()) is not None:
            joined.set_exception(exc)
        else:
            left[0] -= 1
            if left[0] == 0:
                joined.set_result(None)

    for f in futures:
        f.add_done_callback(one_done)
    return joined


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
    headers = event.headers or {}
    return Incoming(
        key=event.key if isinstance(event.key, bytes) else None,
        value=value,
        headers=dict(headers.items()) if hasattr(headers, "items") else dict(headers),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
