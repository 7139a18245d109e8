"""The bound on what a user's or group's record remembers (streams.core.traits): a
client that sends a new trait name with every call cannot grow a record until Kafka
refuses it."""

from __future__ import annotations

import json

from streams.core.reducers import apply_to_group, apply_to_user
from streams.core.traits import IDS_KEPT, TRAITS_MAX_BYTES, merge_traits
from tests.factories import msg

NOW = "2026-11-30T00:00:00Z"


def size(traits: dict) -> int:
    return len(json.dumps(traits, separators=(",", ":")))


def test_traits_merge_latest_wins_when_small():
    assert merge_traits({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}


def test_a_user_whose_calls_bring_new_trait_names_forever_stays_within_the_bound():
    user = None
    for n in range(1600):
        user = apply_to_user(user, msg("identify", traits={f"seen_{n}": "v" * 40, "plan": f"p{n}"}), NOW)
    assert user is not None
    assert size(dict(user.traits)) <= TRAITS_MAX_BYTES
    assert user.traits["plan"] == "p1599" and user.traits["seen_1599"] == "v" * 40  # the latest call's, whole
    kept = sorted(int(k.split("_")[1]) for k in user.traits if k.startswith("seen_"))
    assert kept == list(range(kept[0], 1600)) and kept[0] > 0  # the most recent earlier ones


def test_a_call_whose_own_traits_are_large_keeps_all_of_them():
    old = {f"k{n}": "x" * 100 for n in range(1000)}
    new = {f"n{n}": "y" * 1000 for n in range(30)}  # 30 KB: a message's own traits
    merged = merge_traits(old, new)
    assert all(merged[k] == v for k, v in new.items()) and size(merged) <= TRAITS_MAX_BYTES


def test_group_traits_and_a_merge_are_bounded_too():
    group = None
    for n in range(1600):
        group = apply_to_group(group, msg("group", groupId="g1", traits={"name": "Acme", f"t{n}": "v" * 40}), NOW)
    assert group is not None and size(dict(group.traits)) <= TRAITS_MAX_BYTES and group.name == "Acme"


def test_a_user_in_many_groups_keeps_the_latest():
    user = None
    for n in range(IDS_KEPT + 50):
        user = apply_to_user(user, msg("group", groupId=f"g{n}", traits={"name": "x"}), NOW)
    assert user is not None and len(user.groups) == IDS_KEPT and user.groups[-1] == f"g{IDS_KEPT + 49}"
    assert user.group_id == f"g{IDS_KEPT + 49}"
