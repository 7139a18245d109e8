"""The unacknowledged window is bounded by bytes as well as by events: each unacknowledged
event keeps its record (value, key, headers) alive until it is acknowledged, so 5,000
events of 32 KB would hold 160 MB. The reading loop (`streams.runtime.intake.batches`)
waits while the unacknowledged events' bytes pass CS_RELAY_MAX_UNACKED_BYTES, and goes on
once enough of them are acknowledged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.core.incoming import Incoming
from streams.runtime import intake
from streams.runtime.acks import AckTracker
from streams.settings import Settings, SettingsError
from tests.runtime_world import BY_USER_TOPIC, World


async def test_the_tracker_counts_the_bytes_of_unacknowledged_events_and_frees_them():
    acks = AckTracker()
    gates = [asyncio.get_running_loop().create_future() for _ in range(3)]
    for n, gate in enumerate(gates):
        acks.add("tp", lambda: None, [gate], size=1000 * (n + 1))
    acks.add("other", lambda: None, [], size=50)  # done at once: freed at once
    assert acks.in_flight == 3 and acks.in_bytes == 6000
    gates[1].set_result(None)  # done, but behind the first: still held
    for _ in range(5):
        await asyncio.sleep(0)
    assert acks.in_bytes == 6000
    gates[0].set_result(None)
    await until(lambda: acks.in_flight == 1)
    assert acks.in_bytes == 3000
    acks.forget(["tp"])  # revoked: its events go, and their bytes
    assert acks.in_flight == 0 and acks.in_bytes == 0


async def test_wait_below_waits_while_the_bytes_pass_the_bound_and_not_for_one_event_alone():
    acks = AckTracker()
    gate = asyncio.get_running_loop().create_future()
    acks.add("tp", lambda: None, [gate], size=10_000)  # one event larger than the bound
    reader = asyncio.ensure_future(acks.wait_below(100, max_bytes=4_000))
    await asyncio.sleep(0)
    assert not reader.done() and acks.pressed.is_set()
    gate.set_result(None)
    await asyncio.wait_for(reader, 5.0)
    assert not acks.pressed.is_set()
    # Nothing unacknowledged: never waits, whatever the bound.
    await asyncio.wait_for(acks.wait_below(100, max_bytes=1), 5.0)


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    generation_id: int = 1


@dataclass
class Event:
    key: bytes
    value: bytes
    message: Message
    headers: dict[str, bytes] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)

    def ack(self) -> None:
        self.acked.append(self.message.offset)


class Stream:
    """What `intake.batches` reads of a Faust stream: `noack().events()`; counts what was taken."""

    def __init__(self, events: list[Event]) -> None:
        self._events = events
        self.taken = 0

    def noack(self) -> Stream:
        return self

    async def events(self) -> AsyncIterator[Event]:
        for event in self._events:
            self.taken += 1
            yield event


class App:
    consumer_generation_id = 1

    class flow_control:  # noqa: N801 - Faust's attribute
        @staticmethod
        def is_active() -> bool:
            return True


async def until(condition: Any, seconds: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), seconds)


async def test_a_few_large_events_make_the_reading_loop_wait_and_it_resumes_once_they_are_acknowledged():
    bound = 64 * 1024
    world = World({"CS_RELAY_MAX_UNACKED_BYTES": str(bound)})
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    world.client.gate = asyncio.Event()  # ClientSuccess answers nothing until the gate opens
    partition = world.rt.partition_of("u1")
    blob = "x" * 10_000  # each track about 10 KB, counted 22 KB: the bound holds three of them
    first = world.offsets[(BY_USER_TOPIC, partition)]  # past the group call's, routed already
    events = [
        Event(
            b"u1",
            json.dumps(
                {"type": "track", "userId": "u1", "event": f"E{n}", "messageId": f"m{n}", "properties": {"b": blob}}
            ).encode(),
            Message(BY_USER_TOPIC, partition, first + n),
        )
        for n in range(8)
    ]
    stream = Stream(events)
    reader = asyncio.ensure_future(intake.route(world.rt, App(), stream))  # type: ignore[arg-type]
    try:
        await until(world.rt.acks.pressed.is_set)
        waiting_at = stream.taken
        assert 3 <= waiting_at < len(events)  # far below the 5,000 events, the bytes stop it
        assert bound <= world.rt.acks.in_bytes < bound + 25_000
        # The last event taken waits, unhandled, for the window to free some bytes.
        assert world.rt.acks.in_flight == waiting_at - 1
        await asyncio.sleep(0.05)
        assert stream.taken == waiting_at and world.rt.acks.pressed.is_set()  # and stays waiting
        world.client.gate.set()  # the partner answers: the events are acknowledged in order
        await asyncio.wait_for(reader, 5.0)
    finally:
        reader.cancel()
    assert stream.taken == len(events)
    await until(lambda: world.rt.acks.in_flight == 0)
    assert [e.acked for e in events] == [[first + n] for n in range(8)]
    assert world.rt.acks.in_bytes == 0
    assert world.client.events()[-8:] == [f"E{n}" for n in range(8)]


def test_the_byte_bound_is_a_validated_setting():
    assert Settings.from_env({}).max_unacked_bytes == 64 * 1024 * 1024
    assert Settings.from_env({"CS_RELAY_MAX_UNACKED_BYTES": "1048576"}).max_unacked_bytes == 1024 * 1024
    for bad in ("0", "1000", "lots"):
        with pytest.raises(SettingsError, match="CS_RELAY_MAX_UNACKED_BYTES"):
            Settings.from_env({"CS_RELAY_MAX_UNACKED_BYTES": bad})


def test_an_event_held_counts_its_value_key_and_headers():

    small = Incoming(b"u1", b"{}", {}, BY_USER_TOPIC, 0, 0)
    large = Incoming(b"u1", b"x" * 30_000, {"h": b"y" * 2_000}, BY_USER_TOPIC, 0, 1)
    assert intake.held_bytes(large) - intake.held_bytes(small) >= 31_000
    assert intake.held_bytes(small) >= intake.EVENT_BYTES


def test_every_variable_the_settings_read_is_in_the_configuration_reference():
    from pathlib import Path

    from tests.test_kubernetes import known_variables

    document = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    assert sorted(v for v in known_variables() if f"`{v}`" not in document) == []


def test_a_header_without_a_value_counts_as_empty():
    """Kafka allows a header with a null value, and a producer of the input topic may
    send one; registering its event must not fail (it was handed to the producer by then)."""
    bare = Incoming(b"u1", b"{}", {"x-null": None}, "segment-events", 0, 1)  # type: ignore[dict-item]
    assert intake.held_bytes(bare) == intake.held_bytes(Incoming(b"u1", b"{}", {"x-null": b""}, "segment-events", 0, 1))
