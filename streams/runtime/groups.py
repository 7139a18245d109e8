"""Groups, written by their own partition, and the users waiting for them.

A group call arrives in the partition of the user who made it, but any user's events
may need the group. The global copy (`groups`, a GlobalTable every worker has) is
written only here, in the partition that owns the groupId as a key: `route` sends each
group call there (`group-update`) and keeps the result in the caller's own row
(`UserState.group_copy`) for the caller's next calls. So every record of a group is in
one changelog partition, in one order, and every worker restores the same group after
a restart, whatever order it reads the partitions in (with several writers, the last
partition read won: faust-streaming issue 283).

A user whose events are held until their group is known (or has what a destination
needs) is noted in the group's `waiters` row (`group-wait`); the next update of the
group tells each of them (`group-known`, carrying the group), and their partition
releases what the group now attributes: a group call by one user releases the events
another user sent while the group was unknown (streams.core.waiters).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from streams.core import consent
from streams.core.control import GroupKnown, GroupUpdate, GroupWait
from streams.core.grouplookup import overlay_newer
from streams.core.incoming import Incoming
from streams.core.message import InvalidMessage
from streams.core.outcome import Step
from streams.core.reducers import apply_to_group
from streams.core.releasing import release_ready
from streams.core.segment import parse
from streams.core.state import GroupState
from streams.core.waiters import Waiters, add, tell_now
from streams.runtime import effects, routing
from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")


def update_group(rt: Runtime, record: Incoming, update: GroupUpdate) -> list[Awaitable[Any]]:
    """In the group's partition: apply the group call to the group's record, the one
    place it is written, and tell the users waiting for it."""
    assert record.key is not None
    group_id = record.key.decode("utf-8")
    try:
        msg = parse(update.call.encode("utf-8"))
    except InvalidMessage:  # validated by intake: an older or foreign record
        log.warning("group-update for a group could not be read; skipped")
        return []
    denied, watching = consent.denied(msg.context, rt.consent), consent.watched(rt.consent)
    group = apply_to_group(rt.groups.stored(group_id), msg, update.at, rt.memories, denied, watching)
    rt.tables.groups[group_id] = group.to_dict()
    waiting = Waiters.from_dict(rt.tables.waiters.get(group_id))
    if not waiting.users:
        return []
    del rt.tables.waiters[group_id]
    rt.counters["group_waiters_told"] += len(waiting.users)
    known = GroupKnown(group.to_dict())
    return [effects.control_to_user(rt, user, known) for user in waiting.users]


def add_waiter(rt: Runtime, record: Incoming, wait: GroupWait) -> list[Awaitable[Any]]:
    """In the group's partition: note the user as waiting, or tell it at once if the
    group's record is newer than the one it saw."""
    assert record.key is not None
    group_id = record.key.decode("utf-8")
    current = rt.groups.stored(group_id)
    if tell_now(current.updated_at if current else None, wait.seen):
        assert current is not None
        return [effects.control_to_user(rt, wait.user, GroupKnown(current.to_dict()))]
    before = Waiters.from_dict(rt.tables.waiters.get(group_id))
    after, added = add(before, wait.user, wait.seen)
    if not added:
        rt.counters["group_waiters_full"] += 1
        log.warning("a group has too many users waiting for it; one more waits for its own next call")
    elif after != before:
        rt.tables.waiters[group_id] = after.to_dict()
    return []


def group_known(rt: Runtime, record: Incoming, known: GroupKnown) -> list[Awaitable[Any]]:
    """In the user's partition: release what the group now attributes, and wait again
    if some events still need more of it."""
    assert record.key is not None
    key = record.key.decode("utf-8")
    user = rt.rows.user(key)
    if user is None or user.merged_into:
        return []
    group = GroupState.from_dict(known.group)
    groups = overlay_newer(rt.groups.of(user), group)

    before = rt.rows.pending(key)
    pending, dispatches = before, []
    for dest in rt.destinations:
        if rt.parking.marks.parking[(key, dest.key)] > 0:
            continue  # a park record in transit: its user's events wait behind it
        pending, released = release_ready(pending, dest, user, groups, rt.settings.pending_max_events)
        dispatches += released
    rt.counters["released_by_group"] += len(dispatches)
    work = routing.apply_step(rt, key, before, Step(user, None, pending, dispatches))
    still = any(pending.queue(d.key).held for d in rt.destinations)
    if still and (user.group_id == group.group_id):
        work.append(effects.control_to_user(rt, group.group_id, GroupWait(key, group.updated_at)))
    return work
