"""The Faust work-arounds in streams/faust_fixes.py, against the real broker.

Patch 3 exists because aiokafka's fetcher reads an empty partition set as "every
partition" while Faust hands it a live set that empties during a rebalance. The first
test pins that aiokafka behaviour (if it fails after an upgrade, the patch may no longer
be needed); the others show the patched fetch drains only partitions active when their
records are taken.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.runtime.faust_fixes import _fetch_records

pytestmark = pytest.mark.e2e


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


async def test_aiokafka_reads_an_empty_partition_set_as_all_partitions(kafka_bootstrap, two_partitions):
    consumer, tp0, tp1 = await three_records_buffered_in_each(kafka_bootstrap, *two_partitions)
    try:
        drained = await consumer._fetcher.fetched_records(set(), timeout=1)
        assert {tp: len(records) for tp, records in drained.items()} == {tp0: 3, tp1: 3}
    finally:
        await consumer.stop()


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
