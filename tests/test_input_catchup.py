"""With CS_RELAY_INPUT_KEYED_BY_USER, an input partition assigned is behind until the
intake has handled the record before where it ended at the assignment
(streams.runtime.inputcatchup): until then its users' spilled queues wait."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from streams.runtime import inputcatchup
from streams.runtime.acks import Redeliveries
from streams.runtime.inputcatchup import InputCatchUp


class Kafka:
    """The input partitions' (committed, end), given when `answer` is set; failing `fails` times first."""

    def __init__(self, bounds: Mapping[int, tuple[int, int]], fails: int = 0) -> None:
        self.bounds = dict(bounds)
        self.fails = fails
        self.answer = asyncio.Event()
        self.answer.set()
        self.asked: list[set[int]] = []

    async def __call__(self, partitions: set[int]) -> Mapping[int, tuple[int, int]]:
        self.asked.append(set(partitions))
        now = dict(self.bounds)  # as they are when asked
        await self.answer.wait()
        if self.fails:
            self.fails -= 1
            raise ConnectionError("broker away")
        return {p: now[p] for p in partitions if p in now}


async def turns(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_partition_is_behind_until_the_intake_handled_the_record_before_its_end():
    catchup = InputCatchUp()
    kafka = Kafka({0: (3, 6), 1: (4, 4)})
    catchup.bounds = kafka
    catchup.assign({0, 1})
    assert not catchup.caught_up(0, None) and not catchup.caught_up(1, None)  # Kafka not answered yet
    await turns()
    assert catchup.caught_up(1, None)  # committed at its end: nothing to read again
    read = Redeliveries()
    read.handled({("in", 0): 5})
    assert not catchup.caught_up(0, read.read_to(("in", 0)))
    read.handled({("in", 0): 6})
    assert catchup.caught_up(0, read.read_to(("in", 0)))
    assert catchup.caught_up(0, None)  # and stays so for the assignment
    read.forget([("in", 0)])
    assert read.read_to(("in", 0)) is None


async def test_without_bounds_the_input_is_not_waited_for():
    catchup = InputCatchUp()  # the input is not read in place
    catchup.assign({0})
    assert catchup.caught_up(0, None)


async def test_bounds_kafka_refused_are_asked_again_and_the_partition_waits_meanwhile(monkeypatch):
    monkeypatch.setattr(inputcatchup, "RETRY_DELAY", 0.0)
    catchup = InputCatchUp()
    kafka = Kafka({0: (0, 2)}, fails=2)
    catchup.bounds = kafka
    catchup.assign({0})
    await turns(30)
    assert len(kafka.asked) == 3
    assert not catchup.caught_up(0, 1) and catchup.caught_up(0, 2)
    await catchup.close()


async def test_a_new_assignment_or_a_revocation_ends_what_the_last_one_waited_for():
    catchup = InputCatchUp()
    kafka = Kafka({0: (0, 5), 1: (0, 5)})
    kafka.answer.clear()
    catchup.bounds = kafka
    catchup.assign({0, 1})
    await turns()
    catchup.forget([1])  # revoked
    assert catchup.caught_up(1, None)
    kafka.bounds[0] = (5, 5)  # the next round: committed to its end
    catchup.assign({0})  # the first question is dropped; the second answers
    kafka.answer.set()
    await turns()
    assert catchup.caught_up(0, None)
    await catchup.close()
