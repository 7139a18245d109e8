"""The anonymous merge: a visitor who logs in (an identify with both ids, or an alias)
becomes the user, in two partitions.

1. `route`, in the user's partition, sends a `merge-request` to the anonymous key;
2. there, `give_profile` empties the anonymous profile, marks it `merged_into` the user
   (its later events are forwarded to the user) and sends the profile and its waiting
   events to the user in a `merge-profile` record;
3. in the user's partition, `take_profile` folds them in and releases what the merged
   state can attribute.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from streams.core.control import MergeProfile, MergeRequest
from streams.core.pending import Pending, first_seq
from streams.core.state import UserState
from streams.core.step import merge_step
from streams.runtime import effects
from streams.runtime.runtime import Incoming, Runtime


def give_profile(rt: Runtime, record: Incoming, request: MergeRequest) -> list[Awaitable[Any]]:
    """In the anonymous profile's partition: hand the profile and its waiting events to
    the user it logged in as, and forward this key's later events there."""
    assert record.key is not None  # control records to a user are keyed by the user
    anonymous_id = record.key.decode("utf-8")
    anonymous = rt.user(anonymous_id)
    if anonymous is not None and anonymous.merged_into:
        return []  # merged already (a repeated request)
    profile = MergeProfile(anonymous_id, anonymous.to_dict() if anonymous else None, rt.pending(anonymous_id).to_dict())
    rt.tables.users[anonymous_id] = UserState(key=anonymous_id, merged_into=request.into).to_dict()
    rt.store_pending(anonymous_id, Pending())
    rt.counters["merged.anonymous"] += 1
    return [effects.control_to_user(rt, request.into, profile)]


def take_profile(rt: Runtime, record: Incoming, profile: MergeProfile) -> list[Awaitable[Any]]:
    """In the user's partition: fold the anonymous profile in and release what it allows."""
    assert record.key is not None  # control records to a user are keyed by the user
    key = record.key.decode("utf-8")
    user = rt.user(key) or UserState(key=key, user_id=key)
    anonymous = UserState.from_dict(profile.user) if profile.user else None
    pending = rt.pending(key)
    result = merge_step(
        user,
        pending,
        anonymous,
        Pending.from_dict(profile.pending),
        profile.anonymous_id,
        rt.group,
        rt.destinations,
        first_seq(record.offset),
    )
    return effects.apply_step(rt, key, pending, result)
