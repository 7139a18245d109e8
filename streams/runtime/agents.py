"""The two reading loops, `intake` (input topic) and `route` (by-user topic).

Both read without automatic acknowledgement (`stream.noack()`) and register each event
with the work it started (`Runtime.acks`): an event is acknowledged once that work has
finished and every earlier event of its partition has been, so a commit never passes
unfinished work. Faust agents with concurrency > 1 could (faust issue 606). They read
a batch at a time (what the stream has buffered, streams.runtime.batching): one
back-pressure wait and one changelog scope per batch, each event still registered and
acknowledged on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii
from typing import Any

import faust

from streams.core.deadletter import REPLAY_DESTINATION_HEADER, REPLAY_HEADER, REPLAY_OF_HEADER
from streams.core.message import InvalidMessage, Message
from streams.core.outcome import DeadLetter
from streams.core.reasons import Reason
from streams.core.segment import parse
from streams.runtime import batching, effects, handlers
from streams.runtime.batching import held_bytes
from streams.runtime.incoming import SOURCE_HEADER, Incoming
from streams.runtime.outbox import BY_USER
from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

REPLAY_HEADERS = (REPLAY_HEADER, REPLAY_DESTINATION_HEADER, REPLAY_OF_HEADER)


def intake_agent(rt: Runtime, app: faust.App) -> Callable[[faust.StreamT], Awaitable[None]]:
    """The `intake` agent's function, as Faust runs it (streams.runtime.app registers it)."""

    async def intake_(stream: faust.StreamT) -> None:
        await intake(rt, app, stream)

    return intake_


def route_agent(rt: Runtime, app: faust.App) -> Callable[[faust.StreamT], Awaitable[None]]:
    """The `route` agent's function, as Faust runs it (streams.runtime.app registers it)."""

    async def route_(stream: faust.StreamT) -> None:
        await route(rt, app, stream)

    return route_


async def intake(rt: Runtime, app: faust.App, stream: faust.StreamT) -> None:
    """The input topic, a batch at a time: each record re-keyed by user (`rekey_batch`),
    or with CS_RELAY_INPUT_KEYED_BY_USER routed where it is (`take_keyed_batch`)."""
    take = take_keyed_batch if rt.settings.input_keyed_by_user else rekey_batch
    async for batch in batching.batches(rt, app, stream):
        await take(rt, app, batch)


async def rekey_batch(rt: Runtime, app: faust.App, batch: batching.Taken) -> None:
    """Validate each raw record; re-key the good ones by user, dead-letter the rest.
    An input record is acknowledged once Kafka has taken what it became."""
    for n, (event, record) in enumerate(batch):
        if n and batching.fetched_before_a_rebalance(rt, app, event):
            continue  # a rebalance began while the one before was handed to the producer
        await _handed_over(rt, event, record, admit(rt, record))


async def _handed_over(rt: Runtime, event: Any, record: Incoming, produced: Awaitable[Awaitable[Any]]) -> None:
    """Register `event` with what its record became once handed to the producer
    (`produced`: Kafka's acknowledgement, to be awaited in the background). If the
    producer refused it, registered all the same, as work that failed: never
    acknowledged (no commit passes it) and the worker stops (Runtime.failed_for_good)."""
    try:
        work = await produced
    except Exception as exc:  # noqa: BLE001 - the producer refused the record
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        refused.set_exception(exc)
        work = refused
    rt.acks.add(record.tp, event.ack, [work], held_bytes(record))


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


async def take_keyed_batch(rt: Runtime, app: faust.App, batch: batching.Taken) -> None:
    """CS_RELAY_INPUT_KEYED_BY_USER: an input record in its user's partition is routed
    there, from the input topic (no hop through the by-user topic: the partition counts
    match, checked at start-up by streams.runtime.topics, so the worker that reads it
    owns the user's rows), and acknowledged as a by-user record would be. One that is
    not (a producer that keyed it otherwise) is re-keyed as without the setting: its
    user's state is elsewhere. The records routed here go in runs, a run in one
    changelog scope (`batching.handle`); a record re-keyed in between is handed to the
    producer in input order, and the records after it, taken before that wait, are
    checked for a rebalance again."""
    run: batching.Taken = []
    parsed: list[Message | InvalidMessage] = []
    recheck = False
    for event, record in batch:
        if recheck and batching.fetched_before_a_rebalance(rt, app, event):
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
        await _handed_over(rt, event, record, rekey(rt, record, msg))
        rt.acks.redeliveries.handled([(event, record)])
        recheck = True
    _route_run(rt, run, parsed)


def _route_run(rt: Runtime, run: batching.Taken, parsed: list[Message | InvalidMessage]) -> None:
    if run:
        each = iter(parsed)
        batching.handle(rt, run, lambda record: keyed_step(rt, record, next(each)))
        rt.acks.redeliveries.handled(run)  # read to here: streams.runtime.inputcatchup


def keyed_step(rt: Runtime, record: Incoming, msg: Message | InvalidMessage) -> list[Awaitable[Any]]:
    """An input record in its user's partition (or its dead letter, if invalid)."""
    if isinstance(msg, InvalidMessage):
        return [invalid(rt, record, msg)]
    rt.counters[f"in.{msg.type}"] += 1
    # The state numbers it apart from by-user records (streams.core.positions); it
    # carries the source it was given, so that route_call need not decode the header.
    source = record.source
    key = msg.key.encode("utf-8")
    headers = input_headers(record, source)
    here = Incoming(key, record.value, headers, record.topic, record.partition, record.offset, True, source)
    return handle_safely(rt, here, msg)


def input_headers(record: Incoming, source: dict[str, Any]) -> dict[str, bytes]:
    """The headers an input record carries on, re-keyed or routed in place: where it
    was read (`source`: `record.source`, kept by what it becomes) and those of a
    replay. Only those: an input record's own cannot pose as a control record or claim
    another source."""
    headers = {k: v for k, v in record.headers.items() if k in REPLAY_HEADERS}
    headers[SOURCE_HEADER] = source_header(source)
    return headers


def source_header(source: dict[str, Any]) -> bytes:
    """`json.dumps(source).encode()`, written directly (a quarter of the time): a topic
    name is a JSON string as `json.dumps` writes it, partition and offset are ints."""
    topic, partition, offset = source["topic"], source["partition"], source["offset"]
    if type(topic) is not str or type(partition) is not int or type(offset) is not int:
        return json.dumps(source).encode()
    return f'{{"topic": {encode_basestring_ascii(topic)}, "partition": {partition}, "offset": {offset}}}'.encode()


async def rekey(rt: Runtime, record: Incoming, msg: Message) -> Awaitable[Any]:
    """`record` to the by-user topic, keyed by its user."""
    rt.counters[f"in.{msg.type}"] += 1
    # Hand the record to the producer here, in input order (a user's records must reach
    # the by-user topic in the order they came); only Kafka's acknowledgement is
    # awaited in the background.
    headers = input_headers(record, record.source)
    return await rt.outbox.send(BY_USER, key=msg.key.encode("utf-8"), value=record.value, headers=headers)


async def route(rt: Runtime, app: faust.App, stream: faust.StreamT) -> None:
    """Apply each user's messages to their state, in order, a batch at a time
    (streams.runtime.batching); deliver concurrently."""
    async for batch in batching.batches(rt, app, stream):
        route_batch(rt, batch)


def route_batch(rt: Runtime, batch: batching.Taken) -> None:
    """By-user records, each handled and registered with its work and its batch's
    changelog writes (the event is acknowledged only once Kafka has them:
    `streams.runtime.changelog`)."""
    batching.handle(rt, batch, lambda record: handle_safely(rt, record))


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
