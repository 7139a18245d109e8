"""A step's deliveries enter the senders once (issue 23, item 3: one track through at most
six runtime modules, each entered once): `routing.apply_step` hands every delivery that
goes to a chain to `Senders.submit_all` in one call, with the rules of one dispatch at a
time kept: per (user, destination) the order of the step's deliveries (the released
events sent again, then the call's), the share counted with the step's own deliveries
ahead of each decision, and a pair that starts spilling within a step spilling every
later delivery of it. Through the real runtime without a broker (tests/runtime_world.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from bench.tracehook import profiler
from bench.trackpath import summary
from streams.core.decision import PartnerRequest
from streams.core.outcome import Dispatch, Step
from streams.runtime import routing, spilling
from streams.runtime.runtime import Tables
from streams.runtime.senders import Senders
from tests.runtime_world import PARTITIONS, FakeClient, World

CS = "clientsuccess"
INTO_SENDERS = "streams.runtime.routing -> streams.runtime.senders"


def tables() -> Tables:
    return Tables(users={}, pending={}, groups={}, seen={})


def scanned(world: World) -> None:
    """The spill store as the rescan after an assignment leaves it: every partition
    read, no spilled queue (a delivery under its share then asks nothing)."""
    spills = world.rt.spills
    spills.assigned(range(PARTITIONS))
    for partition in range(PARTITIONS):
        spills.scanned_partition(partition)
    assert spills.complete and not spills.known


async def traced(call: Callable[[], Any]) -> dict[str, int]:
    """The edges between runtime modules while `call` (awaited) runs."""
    records: list[Any] = []
    sys.setprofile(profiler(records))
    try:
        await call()
    finally:
        sys.setprofile(None)
    return {e: n for e, n in summary(records)["edges"].items() if not e.startswith("tests.")}


async def until(condition: Callable[[], bool], world: World, timeout: float = 5.0) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        await world.settle(spins=5)


async def released_then_restarted(env: dict[str, str] | None = None) -> World:
    """A worker whose user u1 had an event held for ClientSuccess (its group unknown),
    released when the group came and stopped before it was delivered; then the next
    worker, on the same tables, with `env`: u1's pending row has that event in
    `releasing`, carried by no delivery of this process, so u1's next call sends it
    again (`resolve_releasing`) before its own (two deliveries of one pair in a step)."""
    shared = tables()
    world = World(tables=shared)
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="Held", context={"groupId": "g2"}, messageId="h")
    world.client.gate = asyncio.Event()
    await world.publish(type="group", userId="u2", groupId="g2", traits={"name": "Beta"}, messageId="u2-g")
    assert [i["raw"] for i in world.pending("u1")["releasing"]] and world.client.events() == ["Held"]
    assert await world.rt.sending.senders.stop(2.0)  # the worker stops; its delivery dies with it
    after = World(env, tables=shared)
    after.now = world.now + 1
    scanned(after)
    return after


async def test_a_track_to_two_partners_enters_the_senders_once():
    world = World(
        {"CS_RELAY_INPUT_KEYED_BY_USER": "true", "CSB_API_KEY": "csb-key-0123456789", "CSB_BASE_URL": "http://csb.x"},
        tables=tables(),
    )
    csb = FakeClient("CustomerSuccessBox")
    world.rt.clients["customersuccessbox"] = csb
    await world.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="warm")  # lanes started
    scanned(world)
    edges = await traced(lambda: world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1"))
    assert world.client.events() == ["Report%20Built"] * 2
    assert [r.path.rsplit("/", 1)[-1] for r in csb.requests] == ["account", "track", "track"]
    assert edges[INTO_SENDERS] == 1
    assert [e for e in edges if e.endswith("streams.runtime.senders") and not e.startswith("the loop")] == [
        INTO_SENDERS
    ]


async def test_a_call_whose_aggregated_request_goes_alone_enters_the_senders_once_with_its_other_delivery(tmp_path):
    """ClientSuccess aggregated (`aggregate = "1h"`) and the user's windows row at its
    byte bound: the call's ClientSuccess request is sent alone (`fold_call`), its
    CustomerSuccessBox one as usual, both in the one call into the senders."""
    mappings = tmp_path / "mappings.toml"
    mappings.write_text('[clientsuccess]\naggregate = "1h"\n')
    env = {"CS_RELAY_MAPPINGS": str(mappings), "CSB_API_KEY": "csb-key-0123456789", "CSB_BASE_URL": "http://csb.x"}
    world = World(env, tables=Tables(users={}, pending={}, groups={}, seen={}, windows={}))
    csb = FakeClient("CustomerSuccessBox")
    world.rt.clients["customersuccessbox"] = csb
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="identify", userId="u1", traits={"firstName": "\x01" * 5000}, messageId="i")
    n = 0
    while not world.rt.counters["not_aggregated.clientsuccess"]:  # until the row is full
        n += 1
        assert n < 40
        await world.publish(type="track", userId="u1", event=f"E{n}", messageId=f"e{n}")
    scanned(world)
    asked = len(world.client.requests), len(csb.requests)
    edges = await traced(lambda: world.publish(type="track", userId="u1", event="Last", messageId="last"))
    assert world.rt.counters["not_aggregated.clientsuccess"] == 2
    assert world.client.events()[asked[0] :] == ["Last"]
    assert [r.path.rsplit("/", 1)[-1] for r in csb.requests[asked[1] :]] == ["track"]
    assert edges[INTO_SENDERS] == 1


async def test_a_released_event_sent_again_and_the_call_after_it_enter_the_senders_once_in_order():
    world = await released_then_restarted()
    world.client.gate = asyncio.Event()
    edges = await traced(lambda: world.publish(type="track", userId="u1", event="New", messageId="n"))
    assert edges[INTO_SENDERS] == 1
    assert world.rt.sending.senders.counts[("u1", CS)] == 2 and not world.rt.spills.known
    world.client.gate.set()
    await until(lambda: world.rt.rows.pending("u1").is_empty() and world.rt.acks.in_flight == 0, world)
    assert world.client.events() == ["Held", "New"]
    assert world.dead_letters() == []


async def test_the_share_counts_the_steps_own_earlier_delivery_of_the_pair():
    """Share 1: the released event sent again takes the chain's one place, so the call
    after it in the same step is spilled, as when each delivery was submitted before
    the next was decided; it is delivered after the released one."""
    world = await released_then_restarted({"CS_RELAY_USER_SHARE": "1"})
    world.client.gate = asyncio.Event()
    await world.publish(type="track", userId="u1", event="New", messageId="n")
    assert world.rt.sending.senders.counts[("u1", CS)] == 1
    assert world.rt.counters["spilled.clientsuccess"] == 1 and ("u1", CS) in world.rt.spills.known
    world.client.gate.set()
    await until(lambda: world.rt.rows.pending("u1").is_empty() and not world.tables.spillrows, world)
    assert world.client.events() == ["Held", "New"]
    assert world.controls(b"spill-done") and world.dead_letters() == []


async def test_before_the_spill_store_has_read_its_partitions_a_steps_deliveries_of_a_pair_go_in_order():
    """Until the rescan after an assignment has read every partition, each delivery asks
    spilling (which finds no spilled queue): the released event sent again is submitted
    before the call after it is asked about, and both go to the chain, in order."""
    world = await released_then_restarted()
    world.rt.spills.assigned(range(PARTITIONS))  # as after an assignment: nothing read yet
    assert not world.rt.spills.complete
    world.client.gate = asyncio.Event()
    edges = await traced(lambda: world.publish(type="track", userId="u1", event="New", messageId="n"))
    assert edges[INTO_SENDERS] == 2  # the second delivery of the pair was asked about after the first went
    assert world.rt.sending.senders.counts[("u1", CS)] == 2 and world.rt.acks.in_flight == 1
    world.client.gate.set()
    await until(lambda: world.rt.rows.pending("u1").is_empty() and world.rt.acks.in_flight == 0, world)
    assert world.client.events() == ["Held", "New"] and world.dead_letters() == []


def call(user: str, n: int) -> Dispatch:
    """A call's delivery to ClientSuccess, numbered `n`."""
    request = PartnerRequest("POST", f"/track/E{n}", {"identity": {"user": {"id": user}}})
    return Dispatch(CS, request, f'{{"messageId": "{user}-{n}"}}', {}, f"{user}-{n}", seq=n)


async def waiting_partner(share: int) -> World:
    """User u1 in a group, every partition scanned, ClientSuccess not answering yet."""
    world = World({"CS_RELAY_USER_SHARE": str(share)}, tables=tables())
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    scanned(world)
    world.client.gate = asyncio.Event()
    return world


def step_of_calls(world: World, numbers: tuple[int, ...]) -> list[Any]:
    """One step of u1 with the deliveries of calls numbered `numbers` (its work)."""
    rt = world.rt
    user, before = rt.rows.user("u1"), rt.rows.pending("u1")
    assert user is not None
    return routing.apply_step(rt, "u1", before, Step(user, None, before, [call("u1", n) for n in numbers]))


async def answered(world: World, work: list[Any]) -> list[str]:
    """ClientSuccess answers: the events it was sent, once all are and the spill is empty."""
    assert world.client.gate is not None
    world.client.gate.set()
    await asyncio.wait_for(asyncio.gather(*work), 5)
    await until(lambda: not world.tables.spillrows, world)
    return world.client.events()


async def test_a_pair_that_starts_spilling_within_a_step_spills_every_later_delivery_of_it():
    """Share 2, one step with four calls' deliveries to one partner: two go to the
    chain, the third and the fourth are spilled, in order; all four are delivered in
    order."""
    world = await waiting_partner(2)
    work = step_of_calls(world, (1, 2, 3, 4))
    assert world.rt.sending.senders.counts[("u1", CS)] == 2
    assert world.rt.spills.queue(("u1", CS)).size == 2 and world.rt.counters["spilled.clientsuccess"] == 2
    assert await answered(world, work) == ["E1", "E2", "E3", "E4"]
    assert world.dead_letters() == []


async def test_a_step_whose_pair_reaches_its_share_puts_no_more_on_the_chain_than_the_share():
    """Share 2 and one delivery of the pair in the chain already: of a step's three, one
    goes to the chain, two are spilled."""
    world = await waiting_partner(2)
    work = step_of_calls(world, (1,))
    assert world.rt.sending.senders.counts[("u1", CS)] == 1
    work += step_of_calls(world, (2, 3, 4))
    assert world.rt.sending.senders.counts[("u1", CS)] == 2 and world.rt.spills.queue(("u1", CS)).size == 2
    assert await answered(world, work) == ["E1", "E2", "E3", "E4"]


async def test_deliveries_dispatched_before_one_that_raises_are_started_all_the_same(monkeypatch):
    """As when each delivery was submitted as it was dispatched: the step's second
    delivery raises (its spill rows could not be written) after the first was decided;
    the first still goes, then the step's error reaches the caller."""
    world = await waiting_partner(32)
    world.rt.spills.assigned(range(PARTITIONS))  # nothing read yet: spilling is asked for each
    asked: list[int] = []

    def admit(rt: Any, key: str, item: Dispatch) -> bool:
        asked.append(item.seq or 0)
        if item.seq == 2:
            raise RuntimeError("the spill table refused a write")
        return False

    monkeypatch.setattr(spilling, "admit", admit)
    other = Dispatch("customersuccessbox", call("u1", 2).request, "{}", {}, "u1-2", seq=2)
    world.rt.clients["customersuccessbox"] = FakeClient("CustomerSuccessBox")
    rt, user, before = world.rt, world.rt.rows.user("u1"), world.rt.rows.pending("u1")
    assert user is not None
    with pytest.raises(RuntimeError):
        routing.apply_step(rt, "u1", before, Step(user, None, before, [call("u1", 1), other]))
    assert asked == [1, 2] and rt.sending.senders.counts == {("u1", CS): 1}
    assert world.client.gate is not None
    world.client.gate.set()
    await until(lambda: not len(rt.sending.senders), world)
    assert world.client.events() == ["E1"]


async def test_submit_all_queues_each_piece_behind_its_keys_earlier_work_in_the_order_given():
    order: list[str] = []
    senders = Senders(2)
    gate = asyncio.Event()

    def job(name: str, wait: bool = False) -> Callable[[], Any]:
        async def run() -> str:
            if wait:
                await gate.wait()
            order.append(name)
            return name

        return run

    first = senders.submit(("a", "cs"), job("a0", wait=True))
    works = senders.submit_all([(("a", "cs"), job("a1")), (("b", "csb"), job("b1")), (("a", "cs"), job("a2"))])
    assert len(works) == 3 and senders.counts[("a", "cs")] == 3 and senders.counts[("b", "csb")] == 1
    assert await asyncio.wait_for(works[1], 2) == "b1"
    assert order == ["b1"]  # a1 and a2 wait behind a0
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, works[0], works[2]), 2) == ["a0", "a1", "a2"]
    assert order == ["b1", "a0", "a1", "a2"] and not senders.counts
    assert senders.submit_all([]) == []
