"""Lists inside state rows are trimmed by bytes as well as by count (issue 22, finding 1):
the hostile calls of the finding, measured as the tables store the rows."""

from __future__ import annotations

import json
from typing import Any

from streams.core.idlimits import MAX_ID_BYTES
from streams.core.memory import Memory
from streams.core.reducers import apply_to_user, merge_users
from streams.core.segment import parse
from streams.core.state import UserState
from streams.core.traits import ADOPTED_KEPT, IDS_MAX_BYTES, SLOT_MAX_BYTES, stored_size
from streams.core.waiters import WAITERS_MAX, WAITERS_MAX_BYTES, Waiters, add

NOW = "2026-01-01T00:00:00+00:00"


def longest_id(n: int) -> str:
    """An id at MAX_ID_BYTES whose stored (escaped) form is as long as it gets: 6 bytes
    a byte (`\\u0001`)."""
    tag = f"{n}-"
    return tag + "\x01" * (MAX_ID_BYTES - len(tag))


def msg(**fields: Any):
    return parse(json.dumps({"userId": "u", "messageId": f"m{len(json.dumps(fields))}", **fields}).encode())


def test_a_users_remembered_groups_stay_under_their_byte_bound():
    user = None
    for n in range(600):
        user = apply_to_user(user, msg(type="group", groupId=longest_id(n)), NOW)
    assert user is not None
    assert stored_size(list(user.groups)) <= IDS_MAX_BYTES
    assert user.groups[-1] == longest_id(599) and user.group_id == longest_id(599)
    assert stored_size(user.to_dict()) < 100 * 1024


def test_merged_anonymous_ids_and_hand_overs_stay_under_their_byte_bound():
    user = UserState(key="u", user_id="u")
    for n in range(1000):
        user = merge_users(user, None, longest_id(n), offset=n)
    assert stored_size(list(user.anonymous_ids)) <= IDS_MAX_BYTES
    assert stored_size(dict(user.adopted)) <= IDS_MAX_BYTES and len(user.adopted) <= ADOPTED_KEPT
    assert user.anonymous_ids[-1] == longest_id(999) and list(user.adopted)[-1] == longest_id(999)


def test_an_older_rows_overlong_lists_are_trimmed_when_read():
    data = UserState(key="u", groups=tuple(longest_id(n) for n in range(200))).to_dict()
    assert stored_size(data["groups"]) > IDS_MAX_BYTES
    user = UserState.from_dict(data)
    assert stored_size(list(user.groups)) <= IDS_MAX_BYTES and user.groups[-1] == longest_id(199)


def test_a_destination_slot_that_would_pass_its_bound_keeps_what_it_had():
    memory = Memory("d", lambda slot, m: {**slot, **{k: v for k, v in m.traits.items()}})
    user = apply_to_user(None, msg(type="identify", traits={"account": "a1"}), NOW, memories=[memory])
    big = apply_to_user(user, msg(type="identify", traits={"x": "y" * SLOT_MAX_BYTES}), NOW, memories=[memory])
    assert big.slot("d") == {"account": "a1"}


def test_the_waiters_row_of_finding_1_stays_under_its_byte_bound():
    """2,000 tracks from distinct long userIds naming one unknown group made a 1.4 MB row."""
    waiters, refused = Waiters(), 0
    for n in range(WAITERS_MAX):
        waiters, added = add(waiters, longest_id(n), None)
        refused += not added
    assert stored_size(waiters.to_dict()) <= WAITERS_MAX_BYTES
    assert refused > 0 and len(waiters.users) == WAITERS_MAX - refused
    again, added = add(waiters, longest_id(0), None)  # one already waiting stays so
    assert added and again is waiters


def test_short_waiters_are_bounded_by_count():
    waiters = Waiters()
    for n in range(WAITERS_MAX + 5):
        waiters, _ = add(waiters, f"user-{n}", None)
    assert len(waiters.users) == WAITERS_MAX
