"""Work-arounds for faust-streaming 0.15 behaviour that would lose or stall events (1-3,
5, 6), and its fetch loop replaced by one that hands over a fetched batch at once (4).

Each patch is small, applied once by `install()` (from `streams.runtime.app`), and says what
it fixes and how to see that it is still needed. Patches 1, 3, 4 and 5 replace Faust methods
with edited copies of faust-streaming 0.15.3's, so pyproject.toml pins that version
and `install()` refuses another: after an upgrade, compare each patched method with
the new Faust's, drop the patches it makes unnecessary, and update FAUST_VERSION.

1. `Recovery.on_recovery_completed` resumes the stream partitions *before* seeking
   them to their committed offsets. Records fetched in between reach the stream
   buffers, are dropped when flow control resumes, and the offset jump they leave
   makes Faust's gap tracking (`Consumer._add_gap`) count them as acknowledged: after
   a takeover the input offset was committed past records nobody processed (seen in
   tests/test_faults_scale.py: about one failover in three lost events). The patched
   copy seeks first and resumes afterwards; nothing else changes.

2. Before committing offsets Faust flushes the producer, so that the changelog records
   of the acknowledged events are in Kafka first. Its buffer flush drains until the
   buffer is empty, and with table writes arriving all the time it never is: commits
   stopped for as long as traffic lasted (a crash then redid all of it).
   `with_bounded_flush` makes the flush wait for what is buffered when it starts, which
   is enough: the changelog records of every acknowledged event were buffered before
   its acknowledgement. `RelayApp._new_producer` applies it to Faust's producer.

3. Faust's fetcher hands aiokafka its *live* set of active partitions and waits up to a
   second for records. aiokafka's `Fetcher.fetched_records(partitions)` reads an empty
   set as "every partition", and the set does become empty while the call waits: a
   rebalance pauses every partition until recovery has finished. The records aiokafka
   then drains (moving its position past them) belong to paused partitions, and Faust
   drops them. When that happens after the post-recovery seek, those records are never
   processed: the partition looks assigned and idle, its offset stays uncommitted (seen
   in tests/test_faults_scale.py after a standby takeover: an input partition's 93 events
   waited until a restart), and with later traffic Faust's gap tracking would commit
   past them. The patched `_fetch_records` gives aiokafka a view that is never "all"
   and answers membership from the live set at the moment records are drained, so only
   partitions that are active then give up their records.

4. Faust's fetch loop (`Consumer._drain_messages`) delivers each fetched record under a
   `wait_first` of its own (four tasks and an `asyncio.wait` per record) and hands the
   event loop over after each, so the agents' micro-batches (streams.runtime.intake)
   found one event in the stream's buffer. `streams.runtime.faust_drain` delivers a
   fetched batch under one `wait_first` (see that module, and docs/benchmarks.md for
   what it saves). A performance patch, NOT INSTALLED in the worker
   (`install(fetch_loop=True)` installs it, with patch 5: `bench.faustcost --drain
   batched` does). Its first version stalled scenario e of `make bench` (2026-12-07,
   two workers: after the second joined, both idle with nothing unacknowledged and
   8,000 of 20,000 tracks never read). Cause found (tests/test_faust_fixes.py, on the
   broker): a batch drained before recovery sought a partition to its committed offset
   went on being handed over after the seek, moving Faust's read offset past records
   then read again (dropped as read) or cleared from the stream buffers, with a false
   gap counted as acknowledged. The loop now stops a partition's records at such a
   seek: patch 3 notes where aiokafka's fetcher stood when it drained them
   (`faust_drain.Drained`). Still not installed: with that check,
   tests/test_faults_scale.py's failover with a standby replica failed 2 of 2 runs
   (20-44 copies of tracks committed before the kill delivered again: presumably the
   standby's dedupe copy incomplete), and passed without it (1 run) and with Faust's
   loop (1 run). Not explained yet: a position change that is not a rewind (of a
   standby changelog partition?) would make the check skip records no seek reads
   again.

5. A stream buffer filled past its high mark takes its partition out of the fetch
   (`Consumer.on_buffer_full`) until the buffer drains (`on_buffer_drop`, from the
   buffer's pressure-drop callbacks). A rebalance clears the buffers but keeps those
   callbacks, which the next read of the empty buffer runs, then, during recovery; and
   `on_buffer_drop` made the partition active even though recovery kept it paused. Its
   records were then fetched and handed over before recovery sought the partition to
   its committed offset, and the ones still in the stream buffer were dropped when
   recovery resumed the flow (Faust clears the buffers then). Faust's own loop, one
   record at a time, hardly ever fills a buffer; the batched loop (4) does under any
   backlog. The patched `on_buffer_drop` leaves a paused partition paused (recovery
   resumes it after the seek); installed with patch 4 only. tests/test_faust_fixes.py
   pins the Faust internals that patches 4 and 5 and the intake read.

6. Faust gives the worker's aiokafka consumer `fetch_max_wait_ms=1500`. aiokafka has
   one fetch request in flight per broker, and leaves out of it every partition whose
   fetched records are not consumed yet: while the agents work through a fetch, that
   is every input partition, so the next request holds only quiet partitions (the
   changelogs of tables nothing writes, by-user when the input is keyed in place, the
   assignor's), and the broker keeps it the whole 1.5 s. The input partitions, consumed
   meanwhile, are fetched again only once it returns: the worker sat idle, its event
   loop and consumer thread asleep, while events waited in Kafka (bench scenario a,
   2026-12-07: deliveries stopped for 1.1-1.5 s every 2-3 s, p99 1.6-4 s; a log of the
   fetch requests showed each stop was one held 1.5 s without the input partitions).
   The patched `_create_worker_consumer` sets FETCH_MAX_WAIT_MS, so such a request
   returns within that; an idle worker then sends that many more empty fetches.
   tests/test_faust_fixes.py shows the wait on the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import faust
from aiokafka.errors import ConsumerStoppedError
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.runtime import faust_drain

FAUST_VERSION = "0.15.3"  # the version whose methods patches 1, 3 and 4 copy
FETCH_MAX_WAIT_MS = 50  # patch 6: the longest a fetch waits at the broker (Faust: 1500)


def check_version(version: str) -> None:
    """Refuse to patch a Faust other than the one the patches were copied from: an
    older copy would silently undo whatever the new version changed."""
    if version != FAUST_VERSION:
        raise RuntimeError(
            f"streams/faust_fixes.py patches copies of faust-streaming {FAUST_VERSION} methods, but "
            f"{version} is installed: install faust-streaming=={FAUST_VERSION}, or port the patches "
            f"(see that module's docstring) and update FAUST_VERSION"
        )


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust 0.15.3's `Recovery.on_recovery_completed`, with the seek moved before
    the stream partitions are resumed."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}")
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def with_bounded_flush(producer: Any) -> Any:
    """Give Faust's producer a buffer flush that terminates under load (patch 2)."""
    buffer = producer.buffer

    async def flush_what_is_buffered_now() -> None:
        await buffer.flush_atmost(buffer.size)

    buffer.flush = flush_what_is_buffered_now
    return producer


def _on_buffer_drop(self: Any, tp: Any) -> None:
    """Faust 0.15.3's `Consumer.on_buffer_drop`, leaving a paused partition paused (patch 5)."""
    buffered_partitions = self._buffered_partitions
    if tp in buffered_partitions:
        buffered_partitions.discard(tp)
        if tp not in self._paused_partitions:
            self._get_active_partitions().add(tp)


class ActiveNow:
    """The partitions to drain, as aiokafka's fetcher asks about them (patch 3): never
    empty-meaning-all, and a partition counts if it is active when its records are taken."""

    __slots__ = ("_live",)

    def __init__(self, live: Collection[Any]) -> None:
        self._live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self._live


async def _fetch_records(
    self: Any,
    consumer: Any,
    active_partitions: set[Any] | None,
    timeout: float | None = None,
    max_records: int | None = None,
) -> Any:
    """Faust 0.15.3's `AIOKafkaConsumerThread._fetch_records`, draining only partitions
    active at the time (patch 3)."""
    if not self.consumer.flow_active:
        return {}
    fetcher = consumer._fetcher
    if consumer._closed or fetcher._closed:
        raise ConsumerStoppedError()
    partitions = None if active_partitions is None else ActiveNow(active_partitions)
    with fetcher._subscriptions.fetch_context():
        records = await fetcher.fetched_records(partitions, timeout=timeout, max_records=max_records)
    # where the fetcher stands now, for the batched loop's deliveries (patch 4's `Drained`)
    setattr(self.consumer, faust_drain.DRAINED, faust_drain.Drained.of(fetcher, records))
    return records


_fausts_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's worker consumer, whose fetches wait at most FETCH_MAX_WAIT_MS at the
    broker (patch 6; aiokafka's fetcher reads it when the consumer starts)."""
    consumer = _fausts_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


def install(*, fetch_loop: bool = False) -> None:
    """Patch Faust's classes (once: the patched methods are how to tell); with
    `fetch_loop`, Faust's fetch loop too (patch 4, not the worker's: see above) and
    patch 5, which only that loop needs."""
    if Recovery.on_recovery_completed is not _on_recovery_completed:
        check_version(faust.__version__)
        Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
        AIOKafkaConsumerThread._fetch_records = _fetch_records  # type: ignore[method-assign]
        AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    if fetch_loop:
        Consumer.on_buffer_drop = _on_buffer_drop  # type: ignore[method-assign]
        faust_drain.install()
