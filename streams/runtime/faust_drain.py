"""Faust's fetch loop handing a fetched batch of records to the streams under one
`wait_first`, not one per record. NOT INSTALLED in the worker: only
`python -m bench.faustcost --drain batched` uses it.

Why not: with it, tests/test_faults_rebalance.py failed in 2 runs of 2 (issue 23, h26):
after the second worker left, the first one found 32 waiting events of taken-over
users without their payload rows ("no payload row ... left out until their record is
processed again") and their deliveries never finished; without it (the micro-batches
of streams.runtime.batching alone) and on main the test passed, with no such error.
Not explained yet: read `Recovery` and the standby changelog path with this loop
before installing it.

Faust 0.15.3's `Consumer._drain_messages` delivers each record it fetched with
`await self.wait_first(callback(message), self.suspend_flow.wait())`: four tasks (the
delivery, the suspend-flow wait, the service's stopped and crashed waits), an
`asyncio.wait` and their cancellation, per record, so that a rebalance (suspend_flow)
can abandon a delivery blocked on a full stream buffer. It also hands control to the
event loop after every record, so an agent wakes for each one and finds its buffer
empty: the micro-batches of streams.runtime.batching stayed at one event.

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
`python -m bench.faustcost` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer

YIELD_EVERY = 100  # records between turns of the event loop, as in Faust


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
                    await self.wait_first(_deliver(self, records), self.suspend_flow.wait())
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


async def _deliver(self: Any, records: list[Any]) -> None:  # pragma: no cover - runs in a worker
    """The body of Faust's per-record loop, each delivery awaited directly."""
    callback = self.callback
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    since_yield = 0
    for tp, message in records:
        since_yield += 1
        if since_yield > YIELD_EVERY:
            await asyncio.sleep(0)
            since_yield = 0
        offset = message.offset
        r_offset = get_read_offset(tp)
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)  # a gap in the incoming messages
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await callback(message)
            set_read_offset(tp, offset)
        else:
            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)


def install() -> None:
    """Replace Faust's fetch loop (bench.faustcost only, see above)."""
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
