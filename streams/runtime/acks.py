"""The acks door (`Acks`, the runtime's `acks`): an event is acknowledged, in offset
order per partition, once its work has finished and Kafka has every changelog write
of its batch (docs/architecture.md, "Acknowledgement order").

One agent instance reads without automatic acks (agent `concurrency>1` can commit
past events in flight: faust issue 606) and `AckTracker` acknowledges each
partition's events strictly in offset order once their work is done. Faust writes a
table's changelog in the background and its commit does not flush all of it
(`streams.runtime.faust_fixes`, patch 2), so `ChangelogWrites.watch(table)` wraps the
table's `send_changelog`, and the writes made while a batch is handled
(`changelog.collecting`, set by the intake) are awaited before its events' acks
(`close_batch`): a write Kafka refuses is work that failed for good (the worker stops:
`Runtime.failed_for_good`), never a commit past it. `Acks.revoked(tps)`: the events of
revoked partitions are never acknowledged here, and a partition assigned again starts
over from its committed offset (`redeliveries`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

MAX_UNACKED_EVENTS = 5000  # beyond this, the reading loops wait (back-pressure); and beyond
# CS_RELAY_MAX_UNACKED_BYTES of records held by unacknowledged events (`Acks.full`)

# An event as `AckTracker.add_batch` takes it: its partition, its ack, its work, its size.
Event = tuple[Hashable, Callable[[], Any], list[asyncio.Future[Any]], int]


class _Partition:
    """One partition's events not yet acknowledged, in offset order, and the coroutine
    that acknowledges them (`AckTracker._acknowledge`)."""

    __slots__ = ("acker", "ended", "failed", "idle", "queue", "waiting")

    def __init__(self) -> None:
        # [ack, its own work, the batch's shared work (emptied once done), size]
        self.queue: deque[list[Any]] = deque()
        self.acker: asyncio.Task[None] | None = None
        self.idle: asyncio.Future[None] | None = None  # what the acker waits on with nothing queued
        # The piece of work the acker waits for, and the future of its own that the work's
        # done-callback sets (`AckTracker._end` takes that callback off before it cancels).
        self.waiting: tuple[asyncio.Future[Any], asyncio.Future[Any]] | None = None
        self.ended = False  # forgotten or stopped: the acker acknowledges nothing more
        self.failed = False  # work of its head failed: nothing more is acknowledged here


class AckTracker:
    """Acknowledges events per partition in offset order once their work is done.

    `add(tp, ack, work)` registers an event: `ack` is called when `work` (awaitables)
    has finished and every earlier event of the same partition has been acknowledged.
    Work that failed or was cancelled did not happen: its event is never acknowledged
    (nor is any later one of its partition), and whoever reads the partition next from
    its committed offset does it again. `forget(tps)` drops the events of revoked
    partitions the same way. Back-pressure on the reading loops: each event is
    registered with `size`, about the bytes it keeps alive until acknowledged (its
    record: `streams.runtime.intake.held_bytes`); `full` says there are `max_events` or
    more, or their sizes add up to `max_bytes`, and `room()` waits until not
    (`wait_below(n, max_bytes)` with other bounds).

    One coroutine per partition (`_acknowledge`, started with the partition's first
    event that cannot be acknowledged at once) waits for its head event's work, in
    offset order, and acknowledges every event done behind it: a piece of work is not
    watched by a callback of its own (it is waited for only when it is the head's, and
    not at all if done by then). A piece of work whose result is a future is done once
    that future is (a packed dedupe row's: `streams.runtime.rows.OpenPacks`, settled
    with its changelog write once the row is written). Work that failed is told to
    `on_failure` once, when it is the partition's head's (the partition's earlier
    events are acknowledged first). `stop()` ends the coroutines.
    """

    def __init__(
        self,
        on_failure: Callable[[Hashable, BaseException], Any] | None = None,
        max_events: int = MAX_UNACKED_EVENTS,
        max_bytes: int | None = None,
    ) -> None:
        # Told of work that failed for good: its event, and every later one of its
        # partition, can no longer be acknowledged in this process.
        self.on_failure = on_failure
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Whether the reading loops must wait (`room`): kept as events come and go, so
        # that a loop reads it rather than calls in once per batch.
        self.full = False
        self._partitions: dict[Hashable, _Partition] = {}
        self._count = 0
        self._bytes = 0
        self._changed = asyncio.Event()
        self.pressed = asyncio.Event()  # set while a reading loop waits in `wait_below`

    @property
    def in_flight(self) -> int:
        return self._count

    @property
    def in_bytes(self) -> int:
        """The sizes of the events registered and not yet acknowledged (nor forgotten)."""
        return self._bytes

    def add(self, tp: Hashable, ack: Callable[[], Any], work: Iterable[Awaitable[Any]] = (), size: int = 0) -> None:
        """Register one event: a batch of one (`add_batch`)."""
        self.add_batch([(tp, ack, [asyncio.ensure_future(w) for w in work], size)])

    def add_batch(self, events: Sequence[Event], shared: Sequence[asyncio.Future[Any]] = ()) -> None:
        """Register a batch's events, in order, as `add` would each: (tp, ack, its own
        work as futures, size), and `shared`, work of every one of them (the batch's
        changelog writes): one list for the batch, emptied by the first of its events
        found done, so that the others do not look at it again."""
        common: list[asyncio.Future[Any]] = list(shared)
        partitions = self._partitions
        for tp, ack, futures, size in events:
            part = partitions.get(tp)
            if part is None:
                partitions[tp] = part = _Partition()
            if not part.queue and _succeeded(futures) and _succeeded(common):
                common.clear()
                _acked(ack)  # nothing before it, nothing to wait for
                continue
            part.queue.append([ack, futures, common, size])
            self._count += 1
            self._bytes += size
            if (part.acker is None or part.acker.done()) and not (part.failed or part.ended):
                # (a coroutine cancelled by another than `_end`, a sweep of tasks: a new one)
                part.acker = asyncio.get_running_loop().create_task(
                    self._acknowledge(tp, part), context=contextvars.Context()
                )
            elif part.idle is not None:
                if not part.idle.done():
                    part.idle.set_result(None)
                part.idle = None
        self.full = self._over()

    async def _acknowledge(self, tp: Hashable, part: _Partition) -> None:
        """The partition's events, acknowledged in order as their work is done; ends
        when the head's work failed (nothing more can be acknowledged here) or when
        forgotten or stopped (cancelled while waiting on a future of its own: never on
        the work, which others own)."""
        loop = asyncio.get_running_loop()
        queue = part.queue
        while True:
            if not queue:
                part.idle = idle = loop.create_future()
                await idle
                continue
            head = queue[0]
            for work in (head[1], head[2]):
                for future in work:
                    while True:
                        if not future.done():
                            waiter = loop.create_future()
                            future.add_done_callback(waiter.set_result)
                            part.waiting = (future, waiter)
                            try:
                                await waiter
                            finally:
                                part.waiting = None
                                if not future.done():  # cancelled by another than `_end`
                                    future.remove_done_callback(waiter.set_result)
                            if part.ended:
                                return
                        failure = _failure(future)
                        if failure is not None:
                            self._failed(tp, part, failure)
                            return
                        result = future.result()
                        if not isinstance(result, asyncio.Future):
                            break
                        future = result  # done once this one is (a packed row's write)
                if work is head[2]:
                    work.clear()  # the batch's shared work: done for its other events too
            queue.popleft()
            self._count -= 1
            self._bytes -= head[3]
            _acked(head[0])
            self.full = self._over()
            self._changed.set()

    def _failed(self, tp: Hashable, part: _Partition, failure: BaseException) -> None:
        part.failed = True
        part.acker = None
        if isinstance(failure, asyncio.CancelledError):
            return  # stopped (its partition revoked, or the worker stopping): not done
        log.error("work for an event failed; it stays unacknowledged", exc_info=failure)
        if self.on_failure is not None:  # (never reached once forgotten: the acker ends first)
            self.on_failure(tp, failure)

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Drop the events of `tps` (revoked): none of them will be acknowledged."""
        for tp in tps:
            part = self._partitions.pop(tp, None)
            if part is None:
                continue
            _end(part)
            if part.queue:
                self._count -= len(part.queue)
                self._bytes -= sum(entry[3] for entry in part.queue)
                part.queue.clear()
                self.full = self._over()
                self._changed.set()

    def stop(self) -> None:
        """The worker stops, its last events drained: the partitions' coroutines end, and
        nothing registered so far is acknowledged after this (an event registered later on
        a partition with nothing queued would be, at once: the stop registers none)."""
        for part in self._partitions.values():
            _end(part)

    def _over(self) -> bool:
        count = self._count
        return count >= self.max_events or (self.max_bytes is not None and count > 0 and self._bytes >= self.max_bytes)

    async def room(self) -> None:
        """Back-pressure, for a reading loop that found `full` set: `wait_below` the
        bounds the tracker was made with."""
        await self.wait_below(self.max_events, self.max_bytes)

    async def wait_below(self, limit: int, max_bytes: int | None = None) -> None:
        """Return once fewer than `limit` events are unacknowledged and, given
        `max_bytes`, their sizes add up to less (one event larger than `max_bytes` alone
        still goes: the loop waits until it is acknowledged before reading the next)."""
        while self._count >= limit or (max_bytes is not None and self._count and self._bytes >= max_bytes):
            self.pressed.set()
            self._changed.clear()
            await self._changed.wait()
        self.pressed.clear()

    async def drain(self, timeout: float) -> bool:
        """Wait until everything registered is acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self.wait_below(1), timeout)
            return True
        except TimeoutError:
            return False


def _end(part: _Partition) -> None:
    """End the partition's acknowledging coroutine, never touching the work it waits for:
    cancelled where it waits on a future of its own that nothing else will set (idle, or
    the work's callback taken off first); else the work is done and its callback, on its
    way, wakes it to find it has ended."""
    part.ended = True
    acker, part.acker = part.acker, None
    if acker is None:
        return
    if part.waiting is None:
        acker.cancel()
        return
    work, waiter = part.waiting
    if work.remove_done_callback(waiter.set_result):
        acker.cancel()


def _succeeded(futures: Sequence[asyncio.Future[Any]]) -> bool:
    """Whether every one of `futures` is done, none failed or cancelled, and none's
    result is a future still to wait for."""
    for future in futures:
        if not future.done() or future.cancelled() or future.exception() is not None:
            return False
        if isinstance(future.result(), asyncio.Future):
            return False  # the acker follows it
    return True


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    return asyncio.CancelledError() if future.cancelled() else future.exception()


def _acked(ack: Callable[[], Any]) -> None:
    try:
        ack()
    except Exception:  # one event's ack must not end its partition's acknowledgements
        log.exception("acknowledging an event failed")


class Redeliveries:
    """Spots a record this process has already taken since its partition was assigned
    (Faust 0.15 could hand a stream the same records twice: `streams.runtime.faust_fixes`
    now seeks first; this stays as a cheap second line, since a record processed twice
    sends partner requests twice). `handled_to` is, per partition, the offset after the
    last record handled since its assignment: the intake reads it (a record below it is
    taken already: `streams.runtime.intake.fresh_records`) and `handled` moves it on, as
    the intake's one call per batch registers the batch (`Acks.close_batch`);
    `forget(tps)` on revocation."""

    def __init__(self) -> None:
        self.handled_to: dict[Hashable, int] = {}

    def handled(self, read_to: Mapping[Hashable, int]) -> None:
        """Each partition of `read_to` has been handled up to the offset given, the one
        after its last record handled (`read_to`: streams.runtime.inputcatchup; the
        redelivery guard)."""
        self.handled_to.update(read_to)

    def read_to(self, tp: Hashable) -> int | None:
        """The offset after the last record of `tp` handled since its assignment, if any."""
        return self.handled_to.get(tp)

    def forget(self, tps: Iterable[Hashable]) -> None:
        for tp in tps:
            self.handled_to.pop(tp, None)


class ChangelogWrites:
    """The changelog writes of the batch being handled. `collecting` is the list they go
    to (None outside a batch): the intake sets it as a batch's steps begin and sets it
    back as they end (`streams.runtime.intake.handle`: two attribute sets, no call in),
    the watched tables' sends append to it, and the state door appends a packed dedupe
    row's future to it (`rows.OpenPacks.remember`). `with changelog as writes` does the
    same as a block, which may nest."""

    def __init__(self) -> None:
        self.collecting: list[Awaitable[Any]] | None = None
        self._outer: list[list[Awaitable[Any]] | None] = []  # the blocks this one is inside

    def watch(self, table: Any) -> None:
        """Collect the changelog writes of `table` (a Faust table) made during an event;
        the send it wraps is its `__wrapped__` (a packed dedupe row's write, awaited as
        its own: `rows.KeptRows.write_packed`)."""
        send = table.send_changelog

        def send_changelog(*args: Any, **kwargs: Any) -> Any:
            written = send(*args, **kwargs)
            if self.collecting is not None and written is not None:
                self.collecting.append(written)
            return written

        send_changelog.__dict__["__wrapped__"] = send
        table.send_changelog = send_changelog

    def collected(self) -> list[Awaitable[Any]]:
        """The list the writes of the batch being handled go to (`collecting`, set by the
        intake for the batch: complete once every handler of the batch has returned), for
        work that must wait for them; empty outside a batch. A packed dedupe row's future
        among them is done once the row is handed to the producer, with the row's write as
        its result: a waiter that needs Kafka's answer follows it, as `AckTracker` does."""
        return self.collecting if self.collecting is not None else []

    def __enter__(self) -> list[Awaitable[Any]]:
        """`with changelog as writes`: the writes made until the block ends (handling is
        synchronous: no other event's writes can come in between). A block inside
        another collects its own writes, and the outer block goes on collecting after it."""
        collected: list[Awaitable[Any]] = []
        self._outer.append(self.collecting)
        self.collecting = collected
        return collected

    def __exit__(self, *exc: object) -> None:
        self.collecting = self._outer.pop()


class Acks(AckTracker):
    """The runtime's acks: an `AckTracker` bounded by `max_events` and `max_bytes`, the
    changelog writes its batches wait for (`changelog`), the redelivery guard
    (`redeliveries`). The intake calls in once per batch, `close_batch(events, writes,
    handled)`, having read `redeliveries.handled_to` and collected the batch's writes in
    `changelog.collecting` (attributes, read and set, not calls)."""

    def __init__(
        self,
        on_failure: Callable[[Hashable, BaseException], Any] | None = None,
        max_events: int = MAX_UNACKED_EVENTS,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(on_failure, max_events, max_bytes)
        self.redeliveries = Redeliveries()
        self.changelog = ChangelogWrites()  # each batch's table writes, awaited before its events' acks

    def close_batch(
        self,
        events: Sequence[Event],
        writes: Sequence[Awaitable[Any]] = (),
        read_to: Mapping[Hashable, int] | None = None,
    ) -> None:
        """A batch handled: `events` registered (`add_batch`), each with its own work and
        the batch's changelog `writes`; each partition of `read_to` handled up to the
        offset given (`Redeliveries.handled`: the redelivery guard, the input's catch-up)."""
        # Each write once (a packed dedupe row is there once per event that joined it).
        self.add_batch(events, list({id(f): f for f in map(asyncio.ensure_future, writes)}.values()))
        if read_to:
            self.redeliveries.handled(read_to)

    def revoked(self, tps: Iterable[Hashable]) -> None:
        tps = list(tps)
        self.redeliveries.forget(tps)
        self.forget(tps)
