"""The Faust work-arounds in streams/faust_fixes.py.

Patch 3 exists because aiokafka's fetcher reads an empty partition set as "every
partition" while Faust hands it a live set that empties during a rebalance. The first
test on the broker pins that aiokafka behaviour (if it fails after an upgrade, the patch
may no longer be needed); the others show the patched fetch drains only partitions
active when their records are taken.

Patch 6 is shown on the broker too: a busy partition's next record waited for a fetch
of quiet partitions that the broker held for Faust's whole maximum wait.

Without a broker: the Faust internals that patch 4 (streams.runtime.faust_drain, the
fetch loop) and the agents' micro-batches (streams.runtime.intake) read are pinned,
so that a Faust upgrade fails here rather than in a worker: the fetch loop it copies,
the consumer's read offsets and callback, the stream's buffer (its channel's queue)
and Faust's current event, whose partition Faust's tables read and write.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
import uuid
from collections import deque
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.events import Event
from faust.types import TP, Message
from mode.utils.queues import FlowControlQueue

from streams.runtime import faust_drain, faust_fixes, intake
from streams.runtime.faust_fixes import _fetch_records

# The source of Faust 0.15.3's Consumer._drain_messages, which faust_drain copies: after
# an upgrade, compare the new one with the copy, port what changed, and update this.
FAUST_DRAIN_MESSAGES_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def unstarted_app(**options: Any) -> faust.App:
    """A Faust app that is never started (no broker is reached)."""
    return faust.App(f"pin-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1", **options)


def event(app: faust.App, partition: int, offset: int, topic: str = "pin") -> Event:
    message = Message(topic, partition, offset, 0.0, 0, {}, b"k", b"v", None, generation_id=app.consumer_generation_id)
    return Event(app, b"k", b"v", {}, message)


def test_fausts_fetch_loop_is_the_one_patch_4_copies():
    source = inspect.getsource(faust_drain.FAUSTS_OWN)
    assert hashlib.sha256(source.encode()).hexdigest() == FAUST_DRAIN_MESSAGES_SHA256


async def test_the_patched_fetch_loop_delivers_in_order_and_keeps_fausts_read_offsets():
    consumer = unstarted_app(store="memory://").consumer
    for name in ("getmany", "wait_first", "commit", "sleep", "_add_gap"):
        assert callable(getattr(consumer, name)), name  # what the loop calls besides
    assert not consumer._stopped.is_set() and not consumer.should_stop
    assert isinstance(consumer.consumer_stopped_errors, tuple)
    assert not consumer.suspend_flow.is_set()  # set while a rebalance stops the flow
    delivered: list[tuple[int, int]] = []

    async def callback(message: Message) -> None:
        delivered.append((message.partition, message.offset))

    consumer.callback = callback
    tp0, tp1 = TP("pin", 0), TP("pin", 1)
    records = [(tp0, event(consumer.app, 0, n).message) for n in (0, 1)] + [(tp1, event(consumer.app, 1, 0).message)]
    await faust_drain._deliver(consumer, records, faust_drain.NOTHING_NOTED)
    assert delivered == [(0, 0), (0, 1), (1, 0)]
    assert consumer._read_offset[tp0] == 1 and consumer._read_offset[tp1] == 0
    read_already = [(tp0, event(consumer.app, 0, 0).message)]
    await faust_drain._deliver(consumer, read_already, faust_drain.NOTHING_NOTED)  # dropped
    assert delivered == [(0, 0), (0, 1), (1, 0)]


async def test_the_stream_buffer_and_the_current_event_that_batching_reads():
    app = unstarted_app(store="memory://")
    app.flow_control.resume()
    stream = app.channel().stream().noack()
    first, second = event(app, 3, 0), event(app, 4, 0)
    stream.channel.queue.put_nowait(first)
    stream.channel.queue.put_nowait(second)
    assert isinstance(stream.channel.queue._queue, deque) and isinstance(app.topic("pin").queue._queue, deque)
    ready = intake._next_ready(stream, app)
    events = stream.events().__aiter__()
    assert ready() and await events.__anext__() is first and faust.current_event() is first
    assert ready() and await events.__anext__() is second and faust.current_event() is second
    assert not ready()  # the buffer is empty
    intake.as_current(first)
    assert faust.current_event() is first
    stream.channel.queue.put_nowait(event(app, 3, 1))
    app.consumer_generation_id += 1  # a rebalance: that record is skipped, not handed out
    assert not ready()


def test_a_cleared_stream_buffer_keeps_its_pressure_drop_callbacks():
    """Faust's behaviour behind patch 5: a stream buffer filled past its high mark (the
    batched loop hands over hundreds of records at once) takes its partition out of the
    fetch until it drains; a rebalance clears the buffer but keeps the callbacks, which
    the next read of the empty buffer runs, then, during recovery."""
    app = unstarted_app(store="memory://")
    queue = FlowControlQueue(maxsize=5, flow_control=app.flow_control, clear_on_resume=True)
    high, dropped = [], []
    for n in range(5):
        queue.put_nowait_enhanced(
            n, on_pressure_high=lambda: high.append(1), on_pressure_drop=lambda: dropped.append(1)
        )
    assert high and not dropped
    queue.clear()  # Faust's flow_control.clear() at a revocation
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    assert dropped


def test_a_partition_paused_for_recovery_stays_paused_when_its_stream_buffer_drains():
    """Patch 5: Faust's `on_buffer_drop` put a partition back among the active ones even
    while a rebalance's recovery kept it paused; the fetch loop then read it before
    recovery sought it to its committed offset, and what it handed over then was lost
    when recovery resumed the flow (Faust clears the stream buffers then)."""
    consumer = unstarted_app(store="memory://").consumer
    consumer.on_buffer_drop = faust_fixes._on_buffer_drop.__get__(consumer)  # what install(fetch_loop=True) patches
    tp = TP("pin", 0)
    consumer._set_active_tps({tp})
    consumer.on_buffer_full(tp)  # its stream's buffer past the high mark
    assert tp not in consumer._get_active_partitions()
    consumer._set_active_tps({tp})  # a rebalance assigns it again (Consumer.on_partitions_assigned)
    consumer.pause_partitions({tp})  # and pauses it until recovery has sought it
    consumer.on_buffer_drop(tp)  # a callback left from before the rebalance
    assert tp not in consumer._get_active_partitions()
    consumer.resume_partitions({tp})  # recovery done (faust_fixes patch 1)
    assert tp in consumer._get_active_partitions()
    consumer.on_buffer_full(tp)
    consumer.on_buffer_drop(tp)  # not paused: back in the fetch, as in Faust
    assert tp in consumer._get_active_partitions()


def test_fausts_tables_read_and_write_the_current_events_partition(tmp_path):
    app = unstarted_app(store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("pin", default=None, partitions=8)
    in_5, in_2 = event(app, 5, 0), event(app, 2, 0)  # Faust's current event is a weak reference
    intake.as_current(in_5)
    assert table.partition_for_key("u1") == 5  # its changelog record's partition
    table.data["u1"] = "row"  # the store alone
    assert sorted(table.data._dbs) == [5] and table.data.get("u1") == "row"
    intake.as_current(in_2)
    assert table.data.get("u1") is None and table.partition_for_key("u1") == 2


@pytest.fixture
async def two_partitions(kafka_bootstrap):
    """A new two-partition topic and a producer for it."""
    topic = f"fix-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        yield topic, producer
    finally:
        await producer.stop()


async def produce(producer: AIOKafkaProducer, topic: str, partition: int, n: int) -> None:
    for i in range(n):
        await producer.send_and_wait(topic, f"{partition}-{i}".encode(), partition=partition)


async def assigned_consumer(bootstrap: str, *tps: TopicPartition) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    consumer.assign(list(tps))
    for tp in tps:
        await consumer.seek_to_beginning(tp)
        await consumer.position(tp)
    return consumer


async def buffered(consumer: AIOKafkaConsumer, *tps: TopicPartition, timeout: float = 30.0) -> None:
    """Wait until aiokafka has fetched records of every tp into its buffer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not all(tp in consumer._fetcher._records for tp in tps):
        assert asyncio.get_running_loop().time() < deadline, "aiokafka fetched nothing"
        await asyncio.sleep(0.02)


async def three_records_buffered_in_each(
    bootstrap: str, topic: str, producer: AIOKafkaProducer
) -> tuple[AIOKafkaConsumer, TopicPartition, TopicPartition]:
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await produce(producer, topic, 0, 3)
    await produce(producer, topic, 1, 3)
    consumer = await assigned_consumer(bootstrap, tp0, tp1)
    await buffered(consumer, tp0, tp1)
    return consumer, tp0, tp1


def flowing() -> SimpleNamespace:
    """The `self` of Faust's consumer thread, as far as `_fetch_records` reads it."""
    return SimpleNamespace(consumer=SimpleNamespace(flow_active=True))


@pytest.mark.e2e
async def test_aiokafka_reads_an_empty_partition_set_as_all_partitions(kafka_bootstrap, two_partitions):
    consumer, tp0, tp1 = await three_records_buffered_in_each(kafka_bootstrap, *two_partitions)
    try:
        drained = await consumer._fetcher.fetched_records(set(), timeout=1)
        assert {tp: len(records) for tp, records in drained.items()} == {tp0: 3, tp1: 3}
    finally:
        await consumer.stop()


@pytest.mark.e2e
async def test_the_patched_fetch_drains_nothing_while_no_partition_is_active(kafka_bootstrap, two_partitions):
    consumer, tp0, tp1 = await three_records_buffered_in_each(kafka_bootstrap, *two_partitions)
    try:
        assert await _fetch_records(flowing(), consumer, set(), timeout=0.5) == {}
        assert [await consumer.position(tp0), await consumer.position(tp1)] == [0, 0]
        # Once a partition is active again its records are all there.
        drained = await _fetch_records(flowing(), consumer, {tp1}, timeout=1)
        assert [r.value for r in drained[tp1]] == [b"1-0", b"1-1", b"1-2"] and tp0 not in drained
    finally:
        await consumer.stop()


@pytest.mark.e2e
async def test_a_partition_paused_while_the_fetch_waits_keeps_its_records(kafka_bootstrap, two_partitions):
    topic, producer = two_partitions
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = await assigned_consumer(kafka_bootstrap, tp0, tp1)
    try:
        live = {tp0}
        waiting = asyncio.ensure_future(_fetch_records(flowing(), consumer, live, timeout=3))
        await asyncio.sleep(0)  # the fetch is waiting for records of tp0
        live.clear()  # a rebalance pauses every partition
        await produce(producer, topic, 0, 2)
        await buffered(consumer, tp0)
        assert await asyncio.wait_for(waiting, 20) == {}
        assert await consumer.position(tp0) == 0  # nothing of tp0 was taken and dropped

        waiting = asyncio.ensure_future(_fetch_records(flowing(), consumer, live, timeout=20))
        await asyncio.sleep(0)
        live.add(tp1)  # tp1 becomes active while the fetch waits; tp0 stays paused
        await produce(producer, topic, 1, 2)
        drained = await asyncio.wait_for(waiting, 20)
        assert list(drained) == [tp1]
        assert await consumer.position(tp0) == 0
    finally:
        await consumer.stop()


@pytest.mark.e2e
async def test_the_batched_loop_hands_over_nothing_of_a_partition_sought_meanwhile(kafka_bootstrap, two_partitions):
    """The stall of scenario e (2026-12-07, two workers, the batched loop installed).
    Recovery seeks each partition back to its committed offset (Consumer.perform_seek:
    aiokafka's position, and Faust's read offset) while the fetch loop may still be
    handing over records it drained before, waiting on a full stream buffer. Those
    records must not be handed over after the seek: they moved Faust's read offset past
    the committed one (and added a false gap, counted as acknowledged), so the records
    read again from there were dropped as read already, while Faust cleared the ones in
    the stream buffers when it resumed the flow. The partition then sat idle with
    nothing unacknowledged and its records never handled."""
    topic, producer = two_partitions
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await produce(producer, topic, 0, 6)
    await produce(producer, topic, 1, 2)
    kafka = await assigned_consumer(kafka_bootstrap, tp0, tp1)
    try:
        await buffered(kafka, tp0, tp1)
        consumer = unstarted_app(store="memory://").consumer
        thread = flowing()
        delivered: list[tuple[int, int]] = []
        buffer_full, sought = asyncio.Event(), asyncio.Event()

        async def callback(message: Message) -> None:
            delivered.append((message.partition, message.offset))
            if (message.partition, message.offset) == (0, 2):
                buffer_full.set()  # the stream's buffer is full: the loop waits here
                await sought.wait()

        consumer.callback = callback

        async def fetched() -> list[tuple[TP, Message]]:
            records = await _fetch_records(thread, kafka, {tp0, tp1}, timeout=5)
            return [
                (TP(tp.topic, tp.partition), event(consumer.app, r.partition, r.offset, topic).message)
                for tp, rs in records.items()
                for r in rs
            ]

        first = await fetched()
        assert len(first) == 8
        delivering = asyncio.ensure_future(
            faust_drain._deliver(consumer, first, getattr(thread.consumer, faust_drain.DRAINED))
        )
        await asyncio.wait_for(buffer_full.wait(), 10)
        kafka.seek(tp0, 1)  # what Consumer.perform_seek does, the committed offset being 1
        consumer._read_offset[TP(topic, 0)] = 1
        sought.set()
        await asyncio.wait_for(delivering, 10)
        assert delivered == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]  # tp1 was not sought
        assert consumer._read_offset[TP(topic, 0)] == 1 and not consumer._gap.get(TP(topic, 0))

        delivered.clear()
        again = await fetched()
        await faust_drain._deliver(consumer, again, getattr(thread.consumer, faust_drain.DRAINED))
        assert delivered == [(0, n) for n in range(1, 6)]  # read again from the committed offset, all
    finally:
        await kafka.stop()


@pytest.mark.e2e
async def test_a_busy_partitions_next_record_does_not_wait_for_a_fetch_of_quiet_ones(kafka_bootstrap, two_partitions):
    """Patch 6. aiokafka keeps one fetch in flight per broker and leaves out of it the
    partitions whose fetched records are not consumed yet. With partition 0 busy (its
    records fetched, not consumed yet, as while the agents handle a batch) the next
    request asks for the quiet partition 1 alone, and the broker holds it for the
    consumer's whole maximum wait: partition 0's next record, produced once its first
    is consumed, is fetched only when that request returns (Faust's 1,500 ms: about
    1.5 s). The consumer is the one Faust's consumer thread creates for a worker."""
    topic, producer = two_partitions
    busy, quiet = TopicPartition(topic, 0), TopicPartition(topic, 1)
    faust_fixes.install()
    app = faust.App(f"pin-{uuid.uuid4().hex[:8]}", broker=f"kafka://{kafka_bootstrap}", store="memory://")
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        consumer.assign([busy, quiet])
        for tp in (busy, quiet):
            await consumer.seek_to_beginning(tp)
        fetcher = consumer._fetcher
        await produce(producer, topic, 0, 1)
        await buffered(consumer, busy)
        deadline = asyncio.get_running_loop().time() + 30
        while fetcher._records[busy].calculate_backoff() or not fetcher._in_flight:  # the request for 1 alone
            assert asyncio.get_running_loop().time() < deadline, "no fetch request went out"
            await asyncio.sleep(0.01)
        assert [r.value for r in (await consumer.getmany(busy, timeout_ms=1000))[busy]] == [b"0-0"]

        produced = time.monotonic()
        await producer.send_and_wait(topic, b"next", partition=0)
        got: list[bytes] = []
        while not got:
            got = [r.value for r in (await consumer.getmany(busy, timeout_ms=5000)).get(busy, [])]
        waited = time.monotonic() - produced
    finally:
        await consumer.stop()
    assert got == [b"next"]
    assert waited < 0.5, f"the next record took {waited:.2f} s"  # patched: FETCH_MAX_WAIT_MS, a few tens of ms
