"""Fairness: a user's deliveries past its share are spilled, then drained in order
(streams.core.spill says why and what the rows hold; streams.runtime.spillstore keeps them).

* `admit`, in the handling of a call's event (`routing.Deliveries.add`, which asks it only
  for a chain at its share or a pair that may have spilled ones): a delivery of a
  (user, destination) at its share (CS_RELAY_USER_SHARE deliveries in memory, the
  senders' `counts`), or with spilled ones already, is written to the spill rows
  instead of handed to the chain.
  Those are changelog writes of the event: it is acknowledged once Kafka has them, not
  once the partner answers, so the partition's offsets move on and other users' events
  are read. A call older than the queue's head (its event read again after a restart,
  ahead of spilled ones that came after it) goes to the chain, which the queue waits
  for. Past CS_RELAY_SPILL_MAX_EVENTS a delivery goes to the chain as before.
* The senders count a chain's deliveries (`Senders.counts`); as one of a pair with
  spilled ones ends, they tell `ended`, and `refill` hands the next spilled ones to
  the same chain, up to the share (not while an earlier owner's records of the
  user may still be read in its partition, by-user or input: calls read again go
  first, `caught_up`).
  A spilled delivery goes through `senders.deliver` like any: a retryable failure
  parks it under its number, and those after it park behind it.
* Each spilled delivery that ended (delivered, parked or dead-lettered) is confirmed
  by a `spill-done` record to the user's partition (`spill_done` drops it and its
  rows); the numbers that end while one is on its way go together in the next.
* `tick` (a timer): after an assignment, finds the queues of the partitions assigned
  here, RESCAN_CHUNK rows at a time with a turn of the event loop between chunks, and
  drains them; and drains those that waited for their partition to catch up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from streams.core import spill
from streams.core.incoming import Incoming
from streams.core.outcome import Dispatch
from streams.core.spill import SpillDone
from streams.runtime import effects, senders
from streams.runtime.spillstore import Pair
from streams.runtime.tablescan import chunks_of_partition

if TYPE_CHECKING:
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

SPILL_TICK = 1.0  # seconds between looks for spilled queues to find or to drain
RESCAN_CHUNK = 500  # rows of the spill table read between two turns of the event loop
CONFIRM_RETRY_MAX = 30.0  # seconds, at most, before a spill-done the producer refused is sent again


def admit(rt: Runtime, key: str, item: Dispatch) -> bool:
    """Whether the delivery `item` is spilled (its rows written) rather than handed to
    the chain: a call's past the share, or behind spilled ones; a released event's
    (held until its user's group was known, say) only behind spilled ones, so that it
    does not overtake them."""
    number = spill.number_of(item)
    if number is None:
        return False  # an aggregation window's request sent alone: not numbered
    store, pair, s = rt.spills, (key, item.destination), rt.settings
    active = rt.sending.senders.counts[pair]
    if active < s.user_share and not store.may_have(pair):
        return False  # the common case: no read
    queue = store.queue(pair)
    found = store.body(pair, number) if queue.size else None
    if item.released_seq is not None and not queue.size:
        return False
    if queue.size and found is None and item.released_seq is None:
        head = store.seq_at(pair, queue.first)
        if head is not None and number < head:
            return False  # read again, older than what spilled after it: it goes first
    if found is None and not spill.should_spill(active, queue.size, share=s.user_share, max_events=s.spill_max_events):
        if queue.size:
            rt.counters[f"spill_full.{item.destination}"] += 1
        return False
    if not store.append(pair, item, queue, found):
        rt.counters[f"spill_too_large.{item.destination}"] += 1
        return False
    rt.counters[f"spilled.{item.destination}"] += 1
    refill(rt, key, item.destination)
    return True


def written() -> asyncio.Future:
    """The work of a spilled delivery in its event: none beyond the rows' writes."""
    done: asyncio.Future = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def ended(rt: Runtime, pair: Pair) -> None:
    """A delivery of a pair with spilled ones left its chain (the senders tell it,
    `Senders.ended`): the next spilled ones may go."""
    refill(rt, *pair)


def refill(rt: Runtime, key: str, destination: str) -> None:
    """Hand the pair's next spilled deliveries to its chain, up to the share."""
    store, pair, counts = rt.spills, (key, destination), rt.sending.senders.counts
    if not store.mine(key) or destination not in rt.clients:
        return  # revoked (the next owner drains it), or the partner no longer enabled (they wait)
    if not caught_up(rt, key):
        store.waiting.add(pair)  # calls read again go first: `tick` comes back
        return
    share = rt.settings.user_share
    queue = None
    while counts[pair] < share:
        queue = queue or store.queue(pair)
        ordinal = max(store.cursor.get(pair, queue.first), queue.first)
        if ordinal >= queue.next:
            return
        seq = store.seq_at(pair, ordinal)
        row = None if seq is None else store.body(pair, seq)
        if seq is None or row is None:
            # Not readable now (the worker stopping closes its tables): left where it is,
            # for the next refill or the next owner. Never confirmed unsent.
            rt.counters["spill_rows_unreadable"] += 1
            log.error("a spilled delivery of a user to %s (#%s) could not be read; it waits", destination, ordinal)
            return
        store.cursor[pair] = ordinal + 1
        item = spill.dispatch_of(row, destination, seq)
        task = rt.sending.senders.submit(pair, functools.partial(drained, rt, key, item))
        task.add_done_callback(functools.partial(_failed, rt, pair))


def caught_up(rt: Runtime, key: str) -> bool:
    """Whether no call of `key`'s older than its spilled deliveries can still be read
    again in its partition: the read-ahead found none of its records up to the by-user
    caught-up record, or that was read (`CatchUp.nothing_ahead`); and, with
    CS_RELAY_INPUT_KEYED_BY_USER, the input partition (where calls are read again from)
    was read to where it ended at the assignment (`InputCatchUp.caught_up`)."""
    partition = rt.partition_of(key)
    catchup = rt.parking.catchup
    if not catchup.nothing_ahead(partition, key):
        return False
    return catchup.input.caught_up(partition, rt.acks.redeliveries.read_to((rt.settings.input_topic, partition)))


def _failed(rt: Runtime, pair: Pair, task: asyncio.Future) -> None:
    """A spilled delivery whose work failed for good (a park or dead-letter record Kafka
    keeps refusing): as for an event's work, the worker stops and the next one sends it
    again, rather than leave the user's queue stuck behind it."""
    exc = None if task.cancelled() else task.exception()
    if exc is not None and rt.spills.mine(pair[0]):  # not once revoked, nor when the worker stops (clients closed)
        rt.failed_for_good(("spill", *pair), exc)


async def drained(rt: Runtime, key: str, item: Dispatch) -> Any:
    result = await senders.deliver(rt, key, item)  # delivered, dead-lettered or parked
    number = spill.number_of(item)
    assert number is not None
    confirm(rt, (key, item.destination), number)
    return result


def confirm(rt: Runtime, pair: Pair, seq: int) -> None:
    store = rt.spills
    store.confirming.setdefault(pair, []).append(seq)
    if pair not in store.flushing:
        store.flushing[pair] = asyncio.ensure_future(_flush(rt, pair))


async def _flush(rt: Runtime, pair: Pair) -> None:
    """Send the pair's confirmations, those that come meanwhile in the next record."""
    store, failures = rt.spills, 0
    try:
        while seqs := store.confirming.pop(pair, None):
            try:
                for record in spill.done_records(pair[1], seqs):
                    await effects.control_to_user(rt, pair[0], record)
                    seqs = seqs[len(record.seqs) :]
            except Exception as exc:  # noqa: BLE001 - Faust wraps the producer's errors
                failures += 1
                log.warning("a spill-done record was refused (%r); sending it again", exc)
                store.confirming[pair] = [*seqs, *store.confirming.get(pair, [])]
                await asyncio.sleep(min(CONFIRM_RETRY_MAX, 0.5 * 2**failures))
    finally:
        store.flushing.pop(pair, None)  # no await since the last look: nothing is left behind


def spill_done(rt: Runtime, record: Incoming, done: SpillDone) -> list[Awaitable[Any]]:
    """In the user's partition: spilled deliveries ended; they and their rows go."""
    assert record.key is not None  # control records to a user are keyed by the user
    dropped = rt.spills.confirm((record.key.decode("utf-8"), done.destination), done.seqs)
    rt.counters[f"spill_done.{done.destination}"] += dropped
    return []


async def tick(rt: Runtime) -> None:
    store = rt.spills
    if store.rescan.is_set() and rt.recovered():
        store.rescan.clear()
        await rescan(rt)
    for pair in list(store.waiting):
        if caught_up(rt, pair[0]):
            store.waiting.discard(pair)
            refill(rt, *pair)


async def rescan(rt: Runtime) -> None:
    """After an assignment: the spilled queues of the partitions assigned here, read a
    chunk at a time (streams.runtime.tablescan), each drained as it is found. A new
    assignment during the scan stops it: the next tick scans again."""
    store = rt.spills

    def owner(key: Any) -> int:
        return rt.partition_of(spill.user_of(key))

    for partition in sorted(store.owned or ()):
        found: set[Pair] = set()
        for chunk in chunks_of_partition(rt.tables.spill, partition, owner, RESCAN_CHUNK):
            for key, _row in chunk:
                pair = spill.queue_of(key)  # an index row, or an order row (a queue starting at 0 has no index row)
                if pair is not None and pair not in found:
                    found.add(pair)
                    store.known.add(pair)
                    refill(rt, *pair)
            await asyncio.sleep(0)
            if store.rescan.is_set():
                return
        store.scanned_partition(partition)
