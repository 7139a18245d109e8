"""The groups a worker made and whose global copy has not caught up yet
(`GroupView.note`, the runtime's `groups`: streams.runtime.groupview) are bounded by bytes as well as by
count: a group's traits can be tens of KB, and 10,000 of them would be hundreds of MB.
One dropped at the bound is read from the global copy instead, as a worker that did not
route the group call reads it; the user who made the call keeps seeing its own copy."""

from __future__ import annotations

from streams.core.memsize import approx_bytes
from streams.core.state import GroupState
from streams.runtime.groupview import GroupView
from tests.runtime_world import World


def group(n: int, at: str = "2026-12-06T10:00:00+00:00", size: int = 10) -> GroupState:
    return GroupState(f"g{n}", name=f"G{n}", traits={"blob": "x" * size}, updated_at=at)


def test_the_oldest_groups_go_once_their_bytes_pass_the_bound():
    one = approx_bytes(group(0, size=10_000).to_dict())
    recent = GroupView({}, max_groups=100, max_bytes=3 * one + one // 2)
    for n in range(5):
        recent.note(group(n, size=10_000))
    assert sorted(recent.noted()) == ["g2", "g3", "g4"]  # three fit, the oldest two went
    assert recent.bytes <= recent.max_bytes
    recent.note(group(2, at="2026-12-06T11:00:00+00:00", size=10_000))  # noted again: the newest now
    recent.note(group(5, size=10_000))
    assert sorted(recent.noted()) == ["g2", "g4", "g5"]
    recent.drop("g4")
    assert sorted(recent.noted()) == ["g2", "g5"] and recent.bytes < 2 * one + one // 2
    too_large = group(9, size=100_000)
    recent.note(too_large)  # alone above the bound: not kept (the global copy is read)
    assert recent.get("g9") is None and sorted(recent.noted()) == ["g2", "g5"]


def test_the_count_bound_stays():
    recent = GroupView({}, max_groups=3, max_bytes=10**9)
    for n in range(5):
        recent.note(group(n))
    assert sorted(recent.noted()) == ["g2", "g3", "g4"]


async def test_a_group_dropped_at_the_bound_is_read_from_the_global_copy_and_its_caller_keeps_its_own():
    world = World()
    rt = world.rt
    rt.groups = GroupView(
        world.tables.groups, max_groups=100, max_bytes=approx_bytes(group(0, size=5_000).to_dict()) * 2
    )
    await world.publish(
        type="group", userId="u1", groupId="acme", traits={"name": "Acme", "plan": "pro"}, messageId="g1"
    )
    # u1's group call made a new record here; acme's partition has not written it yet (its
    # group-update in transit): the global copy holds an older one.
    older = GroupState("acme", name="Acme", traits={"plan": "free"}, updated_at="2000-01-01T00:00:00+00:00")
    rt.tables.groups["acme"] = older.to_dict()
    assert rt.groups.get("acme") is not None and rt.groups.get("acme").traits.get("plan") == "pro"  # the recent one
    # Many other groups made here since (each about 5 KB): acme's overlay goes at the bound.
    for n in range(3):
        rt.groups.note(group(n, size=5_000))
    assert "acme" not in rt.groups.noted()
    assert rt.groups.get("acme") == older  # what the group's partition wrote: read as another worker would
    # The caller's own view keeps its newer copy (UserState.group_copy), so its events see it.
    user = rt.rows.user("u1")
    assert user is not None and rt.groups.of(user)("acme").traits.get("plan") == "pro"
    # Once the group's partition writes the new record, everyone sees it.
    world.tables.groups["acme"] = user.group_copy.to_dict()
    assert rt.groups.get("acme").traits.get("plan") == "pro"
