"""streams.core.waiters: a group's waiting users, bounded."""

from __future__ import annotations

from streams.core.grouplookup import newer, with_copy
from streams.core.state import GroupState, UserState
from streams.core.waiters import Waiters, add, tell_now


def test_a_row_takes_users_up_to_its_limit_and_keeps_what_each_saw():
    row, ok = add(Waiters(), "u1", None, limit=2)
    row, ok2 = add(row, "u2", "2026-11-30T10:00:00+00:00", limit=2)
    full, ok3 = add(row, "u3", None, limit=2)
    assert ok and ok2 and not ok3 and full == row
    again, ok4 = add(row, "u1", "2026-11-30T11:00:00+00:00", limit=2)  # already there: updated, not refused
    assert ok4 and again.users == {"u1": "2026-11-30T11:00:00+00:00", "u2": "2026-11-30T10:00:00+00:00"}
    assert Waiters.from_dict(again.to_dict()) == again and Waiters.from_dict(None) == Waiters()


def test_a_user_is_told_at_once_only_when_the_group_is_newer_than_what_it_saw():
    assert tell_now("2026-11-30T10:00:00+00:00", None)
    assert tell_now("2026-11-30T10:00:01+00:00", "2026-11-30T10:00:00+00:00")
    assert not tell_now("2026-11-30T10:00:00+00:00", "2026-11-30T10:00:00+00:00")
    assert not tell_now(None, None)


def test_a_user_sees_its_own_copy_of_its_group_only_where_it_is_newer():
    old = GroupState("g1", name="Old", updated_at="2026-11-30T10:00:00+00:00")
    new = GroupState("g1", name="New", updated_at="2026-11-30T10:00:05+00:00")
    other = GroupState("g2", name="Other")
    table = {"g1": old, "g2": other}
    user = UserState("u1", group_id="g1", group_copy=new)
    sees = with_copy(table.get, user)
    assert sees("g1") is new and sees("g2") is other
    table["g1"] = GroupState("g1", name="Newest", updated_at="2026-11-30T10:00:09+00:00")
    assert sees("g1").name == "Newest"  # the group's partition wrote a later record
    lookup = table.get
    assert with_copy(lookup, None) is lookup and newer(None, old) is old
    assert UserState.from_dict(user.to_dict()) == user
