"""The anonymous merge across two partitions, through the real runtime without a
broker: a merge-request at the anonymous key, a merge-profile at the user, and the
visitor's held events released to the partner after."""

from __future__ import annotations

import asyncio
import json

from streams.core import control
from streams.core.control import MergeDone, MergeProfile, MergeRequest
from streams.core.step import MERGE_WAIT
from streams.runtime.outbox import BY_USER
from tests.runtime_world import CapturingOutbox, Produced, World


async def visitor_then_login(world: World) -> None:
    await world.publish(type="page", anonymousId="anon-1", name="Pricing", messageId="p1")
    await world.publish(type="track", anonymousId="anon-1", event="Trial Started", messageId="t1")
    held = [h["seq"] for h in world.pending("anon-1")["held"]]
    assert len(held) == 2 and held == sorted(held)  # no group yet: held, numbered in order
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(
        type="identify", userId="u1", anonymousId="anon-1", traits={"email": "a@acme.test"}, messageId="i"
    )


async def test_login_merges_the_visitor_in_both_partitions_and_releases_its_held_events():
    world = World()
    await visitor_then_login(world)

    # 1. the user's partition asks the anonymous key for its profile
    [request] = world.controls(MergeRequest.KIND)
    assert request.key == b"anon-1"
    assert control.decode(request.headers, request.value) == MergeRequest(into="u1")
    # 2. the anonymous partition hands it over and keeps only a forwarding mark
    [profile] = world.controls(MergeProfile.KIND)
    assert profile.key == b"u1"
    handed = control.decode(profile.headers, profile.value)
    assert handed.anonymous_id == "anon-1" and len(handed.pending["queues"]["clientsuccess"]["held"]) == 2
    assert world.tables.users["anon-1"]["merged_into"] == "u1"
    assert world.tables.pending.get("anon-1") is None
    # 3. the user's partition folds it in and releases the visitor's events, in order
    assert world.client.events() == ["Viewed%20Pricing%20Page", "Trial%20Started"]
    assert all(r.json["identity"]["organization"]["id"] == "g1" for r in world.client.requests)
    assert all(r.json["identity"]["user"]["id"] == "u1" for r in world.client.requests)
    assert "anon-1" in world.tables.users["u1"]["anonymous_ids"]
    assert world.tables.pending.get("u1") is None  # released and confirmed (pending-done)
    assert world.rt.counters["merged.anonymous"] == 1
    assert world.dead_letters() == []


async def test_the_visitors_later_events_are_forwarded_to_the_user():
    world = World()
    await visitor_then_login(world)
    sent = len(world.client.requests)
    await world.publish(type="track", anonymousId="anon-1", event="Report Built", messageId="t2")
    forwarded = [r for r in world.outbox.records if r.key == b"u1" and b'"t2"' in r.value and r.kind is None]
    assert len(forwarded) == 1
    assert world.client.events()[sent:] == ["Report%20Built"]
    assert world.client.requests[-1].json["identity"]["user"]["id"] == "u1"


async def test_a_repeated_merge_request_changes_nothing():
    world = World()
    await visitor_then_login(world)
    before = dict(world.tables.users)
    value, headers = control.encode(MergeRequest(into="someone-else"))
    world.outbox.records.append(Produced(BY_USER, b"anon-1", value, headers, None))
    assert await world.settle()
    assert world.tables.users == before
    first, answer = world.controls(MergeProfile.KIND)
    assert first.key == b"u1"  # the one hand-over
    # the other user is told there is nothing to hand over (were it waiting, it would stop)
    assert answer.key == b"someone-else"
    assert control.decode(answer.headers, answer.value) == MergeProfile("anon-1", None, None)


async def test_the_handed_profile_is_kept_until_the_user_says_it_folded_it_in():
    world = World()
    await visitor_then_login(world)
    [done] = world.controls(MergeDone.KIND)
    assert done.key == b"anon-1" and control.decode(done.headers, done.value) == MergeDone(into="u1")
    assert "handing" not in world.tables.users["anon-1"]  # merge-done applied: the copy is gone
    assert world.tables.users["u1"]["adopted"] == {"anon-1": taken_offset(world, MergeProfile.KIND)}


async def test_a_hand_over_lost_in_a_crash_is_sent_again_and_folded_in_once():
    """The anonymous partition wrote its rows, then the worker died before Kafka had the
    merge-profile: the merge-request is processed again after the restart."""
    world = World()
    await world.publish(type="page", anonymousId="anon-1", name="Pricing", messageId="p1")
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    lost = LosingOutbox(MergeProfile.KIND)
    lost.records = world.outbox.records  # the same log, from here on losing merge-profiles
    world.outbox = world.rt.outbox = lost
    await world.publish(type="identify", userId="u1", anonymousId="anon-1", messageId="i")
    assert world.tables.users["anon-1"]["merged_into"] == "u1"
    assert world.tables.users["anon-1"]["handing"]["anonymous_id"] == "anon-1"
    assert world.client.events() == []  # the profile never arrived

    lost.losing = False
    assert await world.redo(taken(world, MergeRequest.KIND))
    assert world.client.events() == ["Viewed%20Pricing%20Page"]
    # and once more, as a second redo would: nothing is folded in or sent twice
    assert await world.redo(taken(world, MergeRequest.KIND))
    assert world.client.events() == ["Viewed%20Pricing%20Page"]
    assert world.tables.pending.get("u1") is None and "handing" not in world.tables.users["anon-1"]


async def test_a_hand_over_sent_twice_is_folded_in_once():
    world = World()
    await visitor_then_login(world)
    handed = next(r for r in world.outbox.records if r.kind == MergeProfile.KIND)
    world.outbox.records.append(Produced(BY_USER, handed.key, handed.value, handed.headers, None))
    assert await world.settle()
    assert world.client.events() == ["Viewed%20Pricing%20Page", "Trial%20Started"]
    assert len(world.controls(MergeDone.KIND)) == 2  # each copy confirmed
    assert world.tables.pending.get("u1") is None


class LosingOutbox(CapturingOutbox):
    """Records of kind `kind` are lost (Kafka never gets them) while `losing`."""

    def __init__(self, kind: bytes) -> None:
        super().__init__()
        self.kind, self.losing = kind, True

    async def send(self, to, *, key, value, headers, partition=None):
        if self.losing and headers.get(control.KIND_HEADER) == self.kind:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return await super().send(to, key=key, value=value, headers=headers, partition=partition)


def taken(world: World, kind: bytes):
    return next(r for r in world.taken if r.headers.get(control.KIND_HEADER) == kind)


def taken_offset(world: World, kind: bytes) -> int:
    return taken(world, kind).offset


class WithholdingOutbox(CapturingOutbox):
    """Records of kind `kind` reach the log only when `release()` is called: a merge
    round trip slower than the user's next calls."""

    def __init__(self, records: list, kind: bytes) -> None:
        super().__init__()
        self.records, self.kind, self.withheld = records, kind, []

    async def send(self, to, *, key, value, headers, partition=None):
        if headers.get(control.KIND_HEADER) == self.kind:
            self.withheld.append(Produced(to, key, value, dict(headers), partition))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return await super().send(to, key=key, value=value, headers=headers, partition=partition)

    def release(self) -> None:
        self.records.extend(self.withheld)
        self.withheld = []


async def test_the_users_later_events_wait_behind_the_visitors_until_its_profile_comes():
    world = World()
    slow = WithholdingOutbox(world.outbox.records, MergeProfile.KIND)
    world.outbox = world.rt.outbox = slow
    await world.publish(type="page", anonymousId="anon-1", name="Pricing", messageId="p1")
    await world.publish(type="identify", userId="u1", anonymousId="anon-1", messageId="login")
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="After login", messageId="t1")
    assert world.client.events() == []  # the visitor's page view has not come yet: the user's track waits
    assert world.tables.users["u1"]["merging"] == "anon-1"

    slow.release()
    assert await world.settle()
    assert world.client.events() == ["Viewed%20Pricing%20Page", "After%20login"]  # the visitor's first
    assert "merging" not in world.tables.users["u1"]


async def test_a_profile_that_never_comes_is_waited_for_a_minute_at_most():
    world = World()
    slow = WithholdingOutbox(world.outbox.records, MergeProfile.KIND)
    world.outbox = world.rt.outbox = slow
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="identify", userId="u1", anonymousId="anon-1", messageId="login")
    await world.publish(type="track", userId="u1", event="Waits", messageId="t1")
    assert world.client.events() == []
    world.now += MERGE_WAIT + 1
    await world.publish(type="track", userId="u1", event="Goes", messageId="t2")
    assert world.client.events() == ["Waits", "Goes"]


async def test_a_login_processed_again_asks_for_the_profile_again():
    """The worker died after the login's state was written and before its merge-request
    reached Kafka: the login is processed again after the restart and must ask again
    (the user waits behind the visitor until the profile comes)."""
    world = World()
    await world.publish(type="page", anonymousId="anon-1", name="Pricing", messageId="p1")
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    lost = LosingOutbox(MergeRequest.KIND)
    lost.records = world.outbox.records
    world.outbox = world.rt.outbox = lost
    await world.publish(type="identify", userId="u1", anonymousId="anon-1", messageId="login")
    await world.publish(type="track", userId="u1", event="After", messageId="t1")
    assert world.client.events() == [] and world.tables.users["u1"]["merging"] == "anon-1"

    lost.losing = False
    login = next(r for r in world.taken if b'"login"' in r.value)
    assert await world.redo(login)
    assert world.client.events() == ["Viewed%20Pricing%20Page", "After"]
    assert "merging" not in world.tables.users["u1"]


async def test_a_visitor_too_large_for_one_hand_over_dead_letters_its_newest_events_first(monkeypatch):
    """The hand-over is one record (and a copy on the visitor's row until merge-done):
    bounded. What does not fit goes to the dead-letter topic, and only once Kafka has
    those is the profile handed over without them; the rest arrive in order."""
    from streams.runtime import merge

    monkeypatch.setattr(merge, "HANDOVER_MAX_BYTES", 6_000)
    world = World()
    pad = "x" * 900
    for n in range(10):
        await world.publish(
            type="track", anonymousId="anon-1", event=f"E{n}", properties={"pad": pad}, messageId=f"t{n}"
        )
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="identify", userId="u1", anonymousId="anon-1", messageId="i")

    [profile] = world.controls(MergeProfile.KIND)
    assert len(profile.value) <= 6_000
    dead = world.dead_letters()
    assert dead and all(d.reason == "pending_overflow" for d in dead)
    cut = [json.loads(d.value)["event"] for d in dead]
    delivered = [e for e in world.client.events() if e.startswith("E")]
    assert delivered + cut == [f"E{n}" for n in range(10)]  # the oldest handed over, in order
    assert b"cs-relay dlq replay" in dead[0].headers["cs-relay-detail"]
    assert world.tables.pending.get("anon-1") is None and world.tables.payloads == {}
    requests = [control.decode(r.headers, r.value) for r in world.controls(MergeRequest.KIND)]
    assert len(requests) == 2 and len(requests[1].cut) == len(cut)  # asked again, once they were in Kafka
