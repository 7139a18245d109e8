"""The catch-up's reader on Kafka (streams.runtime.readahead): an assignment's by-user
partitions read from the worker group's committed offsets up to this assignment's
caught-up records, without joining the group or committing."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.core import control
from streams.core.control import CaughtUp, Park, PendingDone
from streams.core.pending import Parked
from streams.runtime import readahead
from streams.runtime.catchup import CatchUp
from streams.settings import Settings
from tests.test_faust_fixes import two_partitions  # noqa: F401 - the fixture: a new two-partition topic


def park(destination: str) -> tuple[bytes, dict[str, bytes]]:
    return control.encode(Park(destination, None, Parked(0, "{}", {}, {}, "m", 1.0, 1, 2.0), 1))


async def test_the_scan_reads_from_the_committed_offset_to_this_assignment_s_token(kafka_bootstrap, two_partitions):  # noqa: F811
    (topic, producer), group = two_partitions, f"group-{uuid.uuid4().hex[:10]}"
    catchup = CatchUp("w1")
    tokens = catchup.begin({0, 1})
    log = {
        0: [
            (b"u0", *park("cs")),  # applied already: before the committed offset
            (b"u1", b"{}", {}),  # a call
            (b"u1", *park("cs")),
            (b"u5", *control.encode(PendingDone("csb", 3))),
            (b"", *control.encode(CaughtUp("w2/1/0"))),  # another worker's
            (b"", *control.encode(CaughtUp(tokens[0]))),
            (b"u2", *park("cs")),  # after the token: not an earlier owner's
        ],
        1: [(b"u3", *park("cs")), (b"", *control.encode(CaughtUp(tokens[1])))],
    }
    for partition, records in log.items():
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition, headers=list(headers.items()))
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 1})  # partition 1: never committed
    finally:
        await committer.stop()

    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    catchup.scan_ahead(tokens, readahead.reader(settings, group, topic))
    pressed = asyncio.Event()
    pressed.set()  # the reading loops at the window: what the scan cannot clear parks at once

    async def clear(partition: int, key: str, destination: str = "cs") -> bool:
        return await asyncio.wait_for(catchup.clear(partition, key, destination, 20.0, give_up=pressed), 25.0)

    assert await clear(0, "u0") and await clear(0, "u2") and await clear(0, "u5")
    assert not await clear(0, "u1") and not await clear(0, "u5", "csb") and not await clear(1, "u3")
    assert await clear(1, "u1") and await clear(0, "u1", "csb")
    await asyncio.wait_for(catchup.close(), 10.0)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert {tp.partition: o.offset for tp, o in offsets.items()} == {0: 1}  # nothing committed by the scan


async def test_the_input_s_bounds_are_the_group_s_committed_offsets_and_the_ends(kafka_bootstrap, two_partitions):  # noqa: F811
    """For the input read in place (streams.runtime.inputcatchup): a partition never
    committed starts at its earliest offset, as the worker's consumer does."""
    (topic, producer), group = two_partitions, f"group-{uuid.uuid4().hex[:10]}"
    for partition, n in ((0, 3), (1, 2)):
        for i in range(n):
            await producer.send_and_wait(topic, b"{}", key=f"u{i}".encode(), partition=partition)
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 2})
    finally:
        await committer.stop()
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    bounds = readahead.bounds(settings, group, topic)
    assert await asyncio.wait_for(bounds({0, 1}), 30.0) == {0: (2, 3), 1: (0, 2)}

    # A transactional producer's commit marker takes an offset after its records, which
    # no reader is handed: the intake's reading cannot pass it, so the end is the record's.
    transactional = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"t-{uuid.uuid4().hex[:8]}")
    await transactional.start()
    try:
        async with transactional.transaction():
            await transactional.send_and_wait(topic, b"{}", key=b"u9", partition=1)
    finally:
        await transactional.stop()
    assert await asyncio.wait_for(bounds({0, 1}), 30.0) == {0: (2, 3), 1: (0, 3)}  # offset 3: the marker
