"""The index of users by when their next aggregation window closes (streams.core.aggregate
.CloseIndex) is bounded: with `aggregate` set every active user has an open window, and
an entry per user grew with them. Past the bound a user is left out; its windows stay
in the table, where the aggregation rescan finds them once the index has drained to
half its bound: every window is still sent, once, possibly later than its close."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.core.aggregate import CloseIndex
from streams.runtime import aggregation
from tests.runtime_world import PARTITIONS, World


def test_past_its_bound_the_index_leaves_keys_out_and_asks_for_a_rescan_once_drained():
    index = CloseIndex(max_keys=4)
    for n in range(6):
        index.set(f"u{n}", 100.0 + n)
    assert sorted(index.at) == ["u0", "u1", "u2", "u3"] and index.overflowed
    index.set("u0", 90.0)  # an indexed key moves
    assert index.at["u0"] == 90.0 and not index.wants_rescan()
    assert index.pop_due(101.0) == ["u0", "u1"]
    assert index.wants_rescan()
    index.rescan_begins()
    assert not index.overflowed
    for n in range(6):  # what the rescan finds
        index.set(f"u{n}", 200.0 + n)
    assert len(index) == 4 and index.overflowed  # left out again: one more round after these


async def test_every_window_is_sent_though_the_index_holds_only_some_users(tmp_path):
    path = tmp_path / "mappings.toml"
    path.write_text('[clientsuccess]\naggregate = "1h"\n')
    w = World({"CS_RELAY_MAPPINGS": str(path)})
    w.rt.windows.index = CloseIndex(max_keys=3)
    w.rt.assigned(set(range(PARTITIONS)))
    w.now = datetime(2026, 11, 30, 10, 15, tzinfo=UTC).timestamp()
    users = [f"u{n}" for n in range(8)]
    for user in users:
        await w.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")
        await w.publish(type="track", userId=user, event="Export", properties={"value": 2}, messageId=f"{user}-e")
    assert len(w.rt.windows.index) == 3 and w.rt.windows.index.overflowed
    w.now = datetime(2026, 11, 30, 11, 0, 5, tzinfo=UTC).timestamp()
    for _ in range(10):
        await aggregation.tick(w.rt)
        assert await w.settle()
        w.now += 1
    exports = [r for r in w.client.requests if r.path.endswith("/Export")]
    assert len(exports) == len(users)  # one per user's window, none twice
    assert all(row["windows"] == {} for row in w.tables.windows.values())
