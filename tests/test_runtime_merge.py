"""The anonymous merge across two partitions, through the real runtime without a
broker: a merge-request at the anonymous key, a merge-profile at the user, and the
visitor's held events released to the partner after."""

from __future__ import annotations

from streams.core import control
from streams.core.control import MergeProfile, MergeRequest
from streams.runtime.outbox import BY_USER
from tests.runtime_world import Produced, World


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
    assert len(world.controls(MergeProfile.KIND)) == 1
