"""Work that fails for good, through the real runtime without a broker: the event is
never acknowledged, nor any later one of its partition, and the worker stops (its
supervisor restarts it and the event is redone) instead of sitting wedged while /ready
says all is well. An intake produce that raises is such work too: no commit may pass
its event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from streams.runtime import effects, intake
from streams.runtime.outbox import BY_USER, DEAD_LETTERS
from tests.runtime_world import BY_USER_TOPIC, INPUT, CapturingOutbox, World


class RefusingOutbox(CapturingOutbox):
    """Kafka refuses every record for topic `refused`; the key in the error stands for
    anything secret that must not be shown."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def send(
        self, to: str, *, key: bytes | None, value: bytes, headers: Mapping[str, bytes], partition: int | None = None
    ) -> asyncio.Future:
        if to == self.refused:
            raise RuntimeError(f"{to} refused the record (key cs-key-0123456789)")
        return await super().send(to, key=key, value=value, headers=headers, partition=partition)


def refusing_world(refused: str) -> tuple[World, list[BaseException]]:
    world = World()
    world.outbox = world.rt.outbox = RefusingOutbox(refused)
    stopped: list[BaseException] = []
    world.rt.stop = stopped.append
    return world, stopped


async def test_an_intake_produce_that_raises_is_never_acknowledged_and_stops_the_worker(monkeypatch):
    world, stopped = refusing_world(BY_USER)
    record = world._incoming(INPUT, None, b'{"type":"track","userId":"u1","event":"E","messageId":"m"}', {}, 0)

    class Event:
        def ack(self) -> None:
            world.acked.append((INPUT, 0, 0))

    async def the_record(rt, app, stream):  # the reading loop's own filters are not under test here
        yield [(Event(), record)]

    monkeypatch.setattr(intake, "batches", the_record)
    await intake.intake(world.rt, app=None, stream=None)  # type: ignore[arg-type]
    await wait_for(lambda: stopped)
    assert world.acked == []
    assert len(stopped) == 1 and isinstance(stopped[0], RuntimeError)
    assert world.rt.failure is not None and "refused the record" in world.rt.failure
    assert "cs-key-0123456789" not in world.rt.failure  # the ClientSuccess key, redacted


async def test_a_dead_letter_that_cannot_be_written_stops_the_worker_once(monkeypatch):
    monkeypatch.setattr(effects, "DLQ_SEND_ATTEMPTS", 1)  # its retries are tested elsewhere
    world, stopped = refusing_world(DEAD_LETTERS)
    world.client.answers = [400, 400]  # ClientSuccess refuses both tracks: two dead letters
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    acked = len(world.acked)
    await world.publish(type="track", userId="u1", event="Refused", messageId="t1")
    await world.publish(type="track", userId="u1", event="Refused too", messageId="t2")
    await wait_for(lambda: world.client.events().count("Refused%20too") == 1 and world.rt.acks.in_flight == 2)
    assert len(stopped) == 1  # told once, however many events fail after
    assert world.rt.failure is not None and "dead-letters refused the record" in world.rt.failure
    assert not [a for a in world.acked[acked:] if a[0] == BY_USER_TOPIC]  # neither track is acknowledged


async def wait_for(condition, turns: int = 500) -> None:
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail("the condition did not come true")
