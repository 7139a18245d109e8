"""The intake door: the two agents' reading loops, a batch at a time, each record made
the `Incoming` the handlers see (streams.core.incoming). Faust runs the functions made
here (`intake_agent`, `route_agent`; streams.runtime.app registers them): `intake` re-keys
each input record by user onto the by-user topic (`rekey_batch`), or with
CS_RELAY_INPUT_KEYED_BY_USER routes it where it is (`take_keyed_batch`); `route`
hands each by-user record to the routing door (streams.runtime.routing). Both read
without automatic acknowledgement, a batch at a time (`batches`: what the stream has
buffered, up to MAX_BATCH, past back-pressure, without the events a rebalance took
away or this assignment took already: `fresh_records` reads the acks' `handled_to`);
`handle` runs each event's synchronous step while the acks' changelog collects the
batch's writes, and registers every event with its work and those writes in one call
to the acks (`Acks.close_batch`): it is acknowledged in offset order once they are done
(docs/architecture.md, "Acknowledgement order"). A step that raises dead-letters its
event alone (`handle_safely`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import faust
from faust.streams import _current_event

from streams.core.incoming import Incoming
from streams.core.message import InvalidMessage, Message
from streams.core.outcome import DeadLetter
from streams.core.reasons import Reason
from streams.core.segment import parse
from streams.core.sourceheader import input_headers
from streams.runtime import effects, handlers, routing

if TYPE_CHECKING:
    from streams.runtime.acks import Event
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

MAX_BATCH = 64  # events a batch at most: handled without a turn of the event loop (about 20 ms at 300 us an event)
EVENT_BYTES = 2048  # what an unacknowledged event keeps besides its record's bytes (measured: bench/memusers.py)


Taken = list[tuple[Any, Incoming]]
Work = list[Awaitable[Any]]
Agent = Callable[[faust.StreamT], Awaitable[None]]


def intake_agent(rt: Runtime, app: faust.App) -> Agent:
    """The `intake` agent's function, as Faust runs it."""

    async def intake_(stream: faust.StreamT) -> None:
        await intake(rt, app, stream)

    return intake_


def route_agent(rt: Runtime, app: faust.App) -> Agent:
    """The `route` agent's function, as Faust runs it."""

    async def route_(stream: faust.StreamT) -> None:
        await route(rt, app, stream)

    return route_


async def intake(rt: Runtime, app: faust.App, stream: faust.StreamT) -> None:
    take = take_keyed_batch if rt.settings.input_keyed_by_user else rekey_batch
    async for batch in batches(rt, app, stream):
        await take(rt, app, batch)


async def route(rt: Runtime, app: faust.App, stream: faust.StreamT) -> None:
    async for batch in batches(rt, app, stream):
        route_batch(rt, batch)


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
        if rt.acks.full:  # back-pressure: streams.runtime.acks.MAX_UNACKED_EVENTS, CS_RELAY_MAX_UNACKED_BYTES
            await rt.acks.room()
        fresh = fresh_records(rt, app, taken)
        if fresh:
            yield fresh


def _next_ready(stream: Any, app: faust.App) -> Callable[[], bool]:
    """Whether the stream's buffer (Faust's channel queue) holds an event it hands out
    without waiting: fetched in this generation, flow on. Any other ends the batch (the
    stream skips it: taking it would wait for the next record, on an idle partition for
    ever). False for a stream without a buffer."""
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
    those taken already in this assignment (`first_times`)."""
    kept = [(event, record_of(event)) for event in taken if not fetched_before_a_rebalance(rt, app, event)]
    return first_times(kept, rt.acks.redeliveries.handled_to) if kept else kept


def first_times(batch: Taken, handled_to: Mapping[Any, int]) -> Taken:
    """The records of `batch` this assignment has not taken yet: each at or past the
    offset its partition was handled to (`Redeliveries.handled_to`, read here, moved on
    as the batch is registered) and past the batch's earlier records of its partition."""
    kept: Taken = []
    past: dict[Any, int] = {}
    for pair in batch:
        record = pair[1]
        tp = record.tp
        to = past.get(tp)
        if to is None:
            to = handled_to.get(tp, 0)
        if record.offset >= to:
            kept.append(pair)
            past[tp] = record.offset + 1
    return kept


def fetched_before_a_rebalance(rt: Runtime, app: faust.App, event: faust.EventT) -> bool:
    """Whether a rebalance has begun since `event` was fetched (Faust checks it when it
    hands an event out, but back-pressure may wait after that): if so it is left alone
    and the partition's owner reads it again; handled, it would write the user's state
    after the new owner had restored it (seen in tests/test_faults_scale.py)."""
    if app.flow_control.is_active() and event.message.generation_id == app.consumer_generation_id:
        return False
    rt.counters["left_after_rebalance"] += 1
    return True


def record_of(event: faust.EventT) -> Incoming:
    message = event.message
    value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    headers = event.headers or {}
    return Incoming(
        event.key if isinstance(event.key, bytes) else None,
        value,
        dict(headers.items()) if hasattr(headers, "items") else dict(headers),
        message.topic,
        message.partition,
        message.offset,
    )


def handle(rt: Runtime, batch: Taken, step: Callable[[Incoming], Work]) -> None:
    """Each event's `step`, the batch's changelog writes collected meanwhile (the acks'
    `changelog.collecting`, set here and set back: a batch may run inside another's
    block); every event registered with its work and those writes, and read to (the
    redelivery guard, the input's catch-up), in one call to the acks (`Acks.close_batch`)."""
    acks = rt.acks
    changelog = acks.changelog
    writes: list[Awaitable[Any]] = []
    outer, changelog.collecting = changelog.collecting, writes
    works: list[Work] = []
    try:
        for event, record in batch:
            as_current(event)
            works.append(step(record))
    finally:
        changelog.collecting = outer
        if len(works) == len(batch):  # else a step raised past handle_safely: nothing registered
            read_to: dict[Any, int] = {}
            acks.close_batch(registered(batch, works, read_to), writes, read_to)
        else:
            acks.close_batch([], writes)


def as_current(event: Any) -> None:
    """Make `event` Faust's current event (`faust.current_event()`), as the stream does
    when it hands one out: Faust's tables read and write the rows, and send the
    changelog records, of the current event's partition, which is the batch's last
    event's once a batch is taken."""
    _current_event.set(weakref.ref(event))


def registered(batch: Taken, works: Sequence[Work], read_to: dict[Any, int]) -> list[Event]:
    """Each event of the batch as the acks register it: its partition, its ack, its own
    work as futures, its size (`held_bytes`); and in `read_to`, each partition's offset
    after its last record (`Redeliveries.handled`)."""
    events: list[Event] = []
    for (event, record), work in zip(batch, works, strict=True):
        as_current(event)  # its work's tasks start in its context, as they did from its step
        events.append((record.tp, event.ack, [asyncio.ensure_future(w) for w in work], held_bytes(record)))
        read_to[record.tp] = record.offset + 1
    return events


def held_bytes(record: Incoming) -> int:
    """About what an unacknowledged event keeps alive until it is acknowledged: its
    record's value twice (in Faust's event and in `record`, and the text its work decodes
    from them), key and headers, and EVENT_BYTES of objects around them. Measured with
    tracemalloc (bench/memusers.py): 21.6 KB besides the value per event of 20 KB."""
    size = EVENT_BYTES + 2 * len(record.value) + len(record.key or b"")
    for name, value in record.headers.items():
        size += len(name) + len(value or b"")  # Kafka allows a header without a value
    return size


def route_batch(rt: Runtime, batch: Taken) -> None:
    """By-user records, each handled and registered with its work and its batch's
    changelog writes (acknowledged only once Kafka has them)."""
    handle(rt, batch, lambda record: handle_safely(rt, record))


def handle_safely(rt: Runtime, record: Incoming, msg: Message | None = None) -> Work:
    try:
        return routing.handle(rt, record, handlers.HANDLERS) if msg is None else routing.route_call(rt, record, msg)
    except Exception:  # a bug must not stop every other user's events
        log.exception("routing failed for an event at %s; it goes to the dead-letter topic", record.source)
        detail = "cs-relay could not route this event (see the worker log)"
        return [
            effects.dead_letter(rt, DeadLetter(Reason.ROUTING_ERROR, detail, record.value, record.source, "routing"))
        ]


async def rekey_batch(rt: Runtime, app: faust.App, batch: Taken) -> None:
    """Validate each raw record; re-key the good ones by user, dead-letter the rest.
    An input record is acknowledged once Kafka has taken what it became."""
    events: list[Event] = []
    read_to: dict[Any, int] = {}
    try:
        for n, (event, record) in enumerate(batch):
            if n and fetched_before_a_rebalance(rt, app, event):
                continue  # a rebalance began while the one before was handed to the producer
            events.append(await _handed_over(event, record, admit(rt, record)))
            read_to[record.tp] = record.offset + 1
    finally:  # registered at once, and read to, those handed over (all, unless the agent stops)
        rt.acks.close_batch(events, (), read_to)


async def _handed_over(event: Any, record: Incoming, produced: Awaitable[Awaitable[Any]]) -> Event:
    """`event` with what its record became once handed to the producer (`produced`:
    Kafka's acknowledgement, awaited in the background), to register. If the producer
    refused it, registered all the same, as work that failed: never acknowledged (no
    commit passes it) and the worker stops (Runtime.failed_for_good)."""
    try:
        work: asyncio.Future[Any] = asyncio.ensure_future(await produced)
    except Exception as exc:  # noqa: BLE001 - the producer refused the record
        work = asyncio.get_running_loop().create_future()
        work.set_exception(exc)
    return (record.tp, event.ack, [work], held_bytes(record))


async def admit(rt: Runtime, record: Incoming) -> Awaitable[Any]:
    """One input record: what it becomes on the by-user topic, or its dead letter."""
    try:
        msg = parse(record.value)
    except InvalidMessage as exc:
        return invalid(rt, record, exc)
    return await rekey(rt, record, msg)


def invalid(rt: Runtime, record: Incoming, exc: InvalidMessage) -> Awaitable[Any]:
    dead = DeadLetter(exc.reason, exc.detail, record.value, record.source, "intake")
    return effects.dead_letter(rt, dead, key=record.key)


async def rekey(rt: Runtime, record: Incoming, msg: Message) -> Awaitable[Any]:
    """`record` to the by-user topic, keyed by its user, handed to the producer here, in
    input order (a user's records must reach the by-user topic in the order they came);
    only Kafka's acknowledgement is awaited in the background."""
    rt.counters[f"in.{msg.type}"] += 1
    headers = input_headers(record.headers, record.source)
    return await rt.outbox.by_user(key=msg.key.encode("utf-8"), value=record.value, headers=headers)


async def take_keyed_batch(rt: Runtime, app: faust.App, batch: Taken) -> None:
    """CS_RELAY_INPUT_KEYED_BY_USER: an input record in its user's partition is routed
    there, from the input topic (the partition counts match, checked at start-up by
    streams.runtime.topics, so this worker owns the user's rows), and acknowledged as a
    by-user record would be. One that is not (a producer keyed it otherwise) is re-keyed
    as without the setting. The records routed here go in runs, a run in one changelog
    scope (`handle`); a record re-keyed in between is handed to the producer in input
    order, and the records after it are checked for a rebalance again."""
    run: Taken = []
    parsed: list[Message | InvalidMessage] = []
    recheck = False
    for event, record in batch:
        if recheck and fetched_before_a_rebalance(rt, app, event):
            continue
        try:
            msg: Message | InvalidMessage = parse(record.value)
        except InvalidMessage as exc:
            msg = exc
        if isinstance(msg, InvalidMessage) or rt.partition_of(msg.key) == record.partition:
            run.append((event, record))
            parsed.append(msg)
            continue
        _route_run(rt, run, parsed)
        run, parsed = [], []
        rt.counters["rekeyed"] += 1
        handed = await _handed_over(event, record, rekey(rt, record, msg))
        rt.acks.close_batch([handed], (), {record.tp: record.offset + 1})
        recheck = True
    _route_run(rt, run, parsed)


def _route_run(rt: Runtime, run: Taken, parsed: list[Message | InvalidMessage]) -> None:
    if run:
        each = iter(parsed)
        handle(rt, run, lambda record: keyed_step(rt, record, next(each)))  # read to: streams.runtime.inputcatchup


def keyed_step(rt: Runtime, record: Incoming, msg: Message | InvalidMessage) -> Work:
    """An input record in its user's partition (or its dead letter, if invalid),
    numbered apart from by-user records (streams.core.positions), with its source
    given so that route_call need not decode the header."""
    if isinstance(msg, InvalidMessage):
        return [invalid(rt, record, msg)]
    rt.counters[f"in.{msg.type}"] += 1
    source = record.source
    headers = input_headers(record.headers, source)
    here = Incoming(
        msg.key.encode("utf-8"), record.value, headers, record.topic, record.partition, record.offset, True, source
    )
    return handle_safely(rt, here, msg)
