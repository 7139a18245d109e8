"""How each Segment call changes what cs-relay remembers: pure reducers from a record
and a message to the new record. `apply_to_user` and `apply_to_group` for every call
(traits merged, group learned, each destination's slot updated by its `Memory`,
consent's withheld views kept); `anonymous_to_merge` and `merge_users` for a visitor's
profile folded into the user who logged in. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from streams.core import consent
from streams.core.memory import Memory, merge_slots, remembered
from streams.core.message import Message
from streams.core.state import GroupState, UserState, trait_text
from streams.core.traits import ADOPTED_KEPT, latest_entries, latest_ids, merge_traits

LAST_SEEN_STEP = 60.0  # seconds: `last_seen` moves on at most this often


def _moved_on(last_seen: str | None, now: str) -> bool:
    """Whether `last_seen` should become `now`: a minute or more later (a user's record
    is then written only when something else changed, or once a minute, not by every
    call: the record is rewritten, and sent to the changelog, whenever it changes)."""
    if last_seen is None:
        return True
    try:
        return (datetime.fromisoformat(now) - datetime.fromisoformat(last_seen)).total_seconds() >= LAST_SEEN_STEP
    except ValueError:
        return True


def apply_to_user(
    user: UserState | None,
    msg: Message,
    now: str,
    key: str | None = None,
    memories: Iterable[Memory] = (),
    denied: frozenset[str] = frozenset(),
    watching: frozenset[str] = frozenset(),
) -> UserState:
    """The user's record after `msg`: traits merged (latest wins), group learned, and
    each destination's slot updated by its `Memory`. `denied`: the destinations consent
    keeps the call from (of those that name categories, `watching`): their slots do not
    learn from it, and what they saw before is kept for them (streams.core.consent)."""
    user = user or UserState(key=key or msg.key, first_seen=now)
    changes: dict[str, Any] = {"last_seen": now} if _moved_on(user.last_seen, now) else {}
    if user.first_seen is None:
        changes["first_seen"] = now
    if msg.user_id and user.user_id != msg.user_id:
        changes["user_id"] = msg.user_id
    if msg.type == "identify":
        traits = msg.traits
        if traits:
            changes["traits"] = merge_traits(user.traits, traits)
    elif msg.type == "group":
        group_id = msg.group_id
        changes["group_id"] = group_id
        if group_id is not None and group_id not in user.groups:
            changes["groups"] = latest_ids((*user.groups, group_id))
    slots = remembered(user.slots, msg, [m for m in memories if m.key not in denied])
    if slots is not None:
        changes["slots"] = slots
    if watching:
        traits_after = changes.get("traits", user.traits)
        group_after = changes.get("group_id", user.group_id)
        withheld = consent.after_call(
            user.withheld,
            user.traits,
            traits_after,
            denied,
            watching,
            group=(user.group_id, group_after),
            brought=msg.traits if msg.type == "identify" else (),
        )
        if withheld != user.withheld:
            changes["withheld"] = withheld
    return replace(user, **changes) if changes else user  # most calls change nothing (a frozen record)


def apply_to_group(
    group: GroupState | None,
    msg: Message,
    now: str,
    memories: Iterable[Memory] = (),
    denied: frozenset[str] = frozenset(),
    watching: frozenset[str] = frozenset(),
) -> GroupState:
    """The group's record after a group call: name and traits updated, and each
    destination's slot updated by its `Memory`; `denied` and `watching` as for
    `apply_to_user`."""
    if group is None:
        assert msg.group_id is not None, "a group call has a groupId (segment.validate requires it)"
        group = GroupState(group_id=msg.group_id)
    traits = merge_traits(group.traits, msg.traits)
    slots = remembered(group.slots, msg, [m for m in memories if m.key not in denied], group=True)
    withheld = (
        consent.after_call(group.withheld, group.traits, traits, denied, watching, brought=msg.traits)
        if watching
        else group.withheld
    )
    return replace(
        group,
        name=trait_text(msg.traits.get("name")) or group.name,
        traits=traits,
        slots=group.slots if slots is None else slots,
        updated_at=now,
        withheld=withheld,
    )


def anonymous_to_merge(msg: Message, user: UserState) -> str | None:
    """The anonymous profile that `msg` links to this user and that is not merged yet:
    an alias call's `previousId`, or an identify carrying both ids."""
    if msg.type == "alias":
        anonymous = msg.previous_id
    elif msg.type == "identify" and msg.user_id and msg.anonymous_id:
        anonymous = msg.anonymous_id
    else:
        return None
    if not anonymous or anonymous == user.key:
        return None
    if anonymous in user.anonymous_ids and anonymous != user.merging:
        return None
    # Not asked yet, or asked and still awaited: ask (again). The same call processed
    # again after a crash finds the id recorded while the request may never have reached
    # Kafka; asking twice is harmless (the visitor's partition hands over once).
    return anonymous


def merge_users(
    user: UserState, anonymous: UserState | None, anonymous_id: str, offset: int | None = None
) -> UserState:
    """The user's record with an anonymous profile folded in. What the identified user
    already has wins (it is newer); the anonymous profile fills the gaps. `offset`: the
    by-user offset of the merge-profile record, remembered in `adopted`."""
    ids = user.anonymous_ids if anonymous_id in user.anonymous_ids else latest_ids((*user.anonymous_ids, anonymous_id))
    adopted = dict(user.adopted)
    if offset is not None:
        adopted.pop(anonymous_id, None)
        adopted[anonymous_id] = offset
        adopted = latest_entries(adopted, ADOPTED_KEPT)
    user = replace(user, adopted=adopted)
    if user.merging == anonymous_id:
        user = replace(user, merging=None, merging_since=None)  # the profile it waited for
    if anonymous is None:
        return replace(user, anonymous_ids=ids)
    groups = latest_ids(tuple(dict.fromkeys((*anonymous.groups, *user.groups))))
    return replace(
        user,
        traits=merge_traits(anonymous.traits, user.traits),
        group_id=user.group_id or anonymous.group_id,
        groups=groups,
        slots=merge_slots(user.slots, anonymous.slots),
        first_seen=min(filter(None, (user.first_seen, anonymous.first_seen)), default=None),
        anonymous_ids=ids,
        withheld=consent.merge(user.withheld, anonymous.withheld, user.traits, user_has_group=bool(user.group_id)),
    )
