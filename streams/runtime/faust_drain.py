"""Faust's fetch loop handing a fetched batch of records to the streams under one
`wait_first`, not one per record: patch 4 of streams.runtime.faust_fixes, NOT
INSTALLED in the worker (only `faust_fixes.install(fetch_loop=True)`, which
`bench.faustcost --drain batched` uses): see faust_fixes' docstring, patch 4, for the
stall it caused, its cause, and why the check below is not enough to install it.

Faust 0.15.3's `Consumer._drain_messages` delivers each record it fetched with
`await self.wait_first(callback(message), self.suspend_flow.wait())`: four tasks (the
delivery, the suspend-flow wait, the service's stopped and crashed waits), an
`asyncio.wait` and their cancellation, per record, so that a rebalance (suspend_flow)
can abandon a delivery blocked on a full stream buffer. It also hands control to the
event loop after every record, so an agent wakes for each one and finds its buffer
empty: the micro-batches of streams.runtime.intake stayed at one event.

The patched copy fetches as Faust does, in the fetch loop's task (`getmany`, whose
waits, for records and for the flow to resume after a rebalance, must not race the
suspended flow: a first version of this patch let them, and the fetch loop spun
while a rebalance stopped the flow), and delivers the records of one
`getmany` under one `wait_first` with the same three rivals: a rebalance, a stop or
a crash abandons the rest of the fetched batch as the per-record form abandoned each
of its records (those are not set as read; Faust seeks every partition to its
committed offset after a rebalance, and forgets the read offsets of revoked ones).
Everything else is as in Faust: the read offsets and gaps, the commit every
`commit_every` acknowledgements, a turn of the loop every 100 records. Measured with
`python -m bench.faustcost --drain faust|batched` (docs/benchmarks.md).

A seek invalidates what was drained before it (aiokafka drops its own buffered records
of a partition it seeks). Handing a batch over takes a while (a full stream buffer makes
it wait), and recovery seeks every partition to its committed offset meanwhile (and
seeks changelog partitions where their reading starts). A record drained before the seek
and handed over after it moved Faust's read offset past records then read again from
the committed offset, which were dropped as read, or were cleared from the stream
buffers when recovery resumed the flow, and it made a false gap (offsets counted as
acknowledged) between the committed offset and itself: the stall of scenario e
(faust_fixes, patch 4). So patch 3 notes, as aiokafka drains a fetch's records, where
its fetcher then stands for each partition (`Drained`); a partition repositioned since
(sought, reset, or assigned anew) hands over nothing more of that batch, and a record
in hand when it moved does not set the read offset: the seek's read offset stays, and
those records are read again from there.

What batches of more than one event exposed (issue 23): Faust's tables read and write
the rows, and send the changelog records, of the partition of Faust's current event
(a context variable the stream sets as it hands an event out). The agents take a batch
first and handle it after, so every event of a batch over several partitions was
handled as if it were of the last one's partition: its user's rows read from and
written to another partition's store and changelog. tests/test_faults_rebalance.py
then failed (a taken-over user's waiting events had no payload rows: they were in
another partition's changelog) and scenario b held every track (users' group calls
written where their next batch did not look). streams.runtime.intake now makes each
event current before it is handled, and the senders run outside any event's context
(streams.runtime.senders). Faust's changelog reading (`Recovery`, standbys) was not
at fault: its records come through the same callback, one after another, and what a
rebalance abandons is read again from the committed (or, for a changelog, the
restored) offset. tests/test_faust_fixes.py pins the Faust internals this loop reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer

YIELD_EVERY = 100  # records between turns of the event loop, as in Faust
DRAINED = "_cs_relay_drained"  # the Faust consumer's attribute that holds the last fetch's `Drained`
FAUSTS_OWN = Consumer._drain_messages  # the loop copied (tests/test_faust_fixes.py pins its source)


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - runs in a worker
    """Faust 0.15.3's `Consumer._drain_messages`, one `wait_first` per fetched batch."""
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(CONSUMER_FETCHING)
            ait = cast(AsyncIterator, self.getmany(timeout=1.0))
            # Sleeping because sometimes getmany is called in a loop never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                # Fetched here, in the fetch loop's own task, as Faust does (`getmany`
                # waits for records, and for the flow to resume after a rebalance: that
                # wait must not race the suspended flow); only the deliveries race it.
                records = [pair async for pair in ait]
                if records:
                    drained = getattr(self, DRAINED, NOTHING_NOTED)  # noted by patch 3 as it drained them
                    await self.wait_first(_deliver(self, records, drained), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        self.diag.unset_flag(CONSUMER_FETCHING)


class Drained:
    """Where aiokafka's fetcher stood, for each partition of a fetch's records, right
    after it drained them: its assignment, the partition's state and its position then.
    Noted in the consumer's thread by patch 3 (`faust_fixes._fetch_records`) before
    anything else runs there; `unmoved(tp)` says whether the partition is still there
    (a seek, a reset or a new assignment since: it is not)."""

    __slots__ = ("_at",)

    def __init__(self, at: dict[Any, tuple[Any, Any, int | None]]) -> None:
        self._at = at

    @classmethod
    def of(cls, fetcher: Any, records: Iterable[Any]) -> Drained:
        subscription = fetcher._subscriptions.subscription
        assignment = None if subscription is None else subscription.assignment
        at = {}
        if assignment is not None:
            for tp in records:
                state = assignment.state_value(tp)
                if state is not None:
                    at[tp] = (assignment, state, state._position)
        return cls(at)

    def unmoved(self, tp: Any) -> bool:
        at = self._at.get(tp)
        if at is None:
            return True  # not noted (patch 3 not installed): as Faust's loop
        assignment, state, position = at
        return state._position == position and assignment.active


NOTHING_NOTED = Drained({})


async def _deliver(self: Any, records: list[Any], drained: Drained) -> None:  # pragma: no cover - runs in a worker
    """The body of Faust's per-record loop, each delivery awaited directly, and none of
    a partition repositioned since its records were drained (see `Drained`)."""
    callback = self.callback
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    unmoved = drained.unmoved
    since_yield = 0
    for tp, message in records:
        since_yield += 1
        if since_yield > YIELD_EVERY:
            await asyncio.sleep(0)
            since_yield = 0
        if not unmoved(tp):
            continue  # sought since: read again from where the seek put it
        offset = message.offset
        r_offset = get_read_offset(tp)
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            waited = False
            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)  # a gap in the incoming messages
                waited = True
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
                waited = True
            if waited and not unmoved(tp):
                continue
            await callback(message)
            if unmoved(tp):  # else the seek that came meanwhile set the read offset: keep it
                set_read_offset(tp, offset)
        else:
            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)


def install() -> None:
    """Replace Faust's fetch loop (from `faust_fixes.install`)."""
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
