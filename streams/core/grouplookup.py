"""Which record of a group a user's call sees. A group is written by its own partition
and reaches the global copy a moment later; until then the user's own calls read the
copy in their record (`UserState.group_copy`). Of two records of a group the later
written wins (`newer`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.core.state import GroupLookup, GroupState, UserState


def newer(a: GroupState | None, b: GroupState | None) -> GroupState | None:
    """The later written of two records of a group (`updated_at`, ISO 8601 in UTC)."""
    if a is None or b is None:
        return a or b
    return b if (b.updated_at or "") > (a.updated_at or "") else a


def with_copy(groups: GroupLookup, user: UserState | None) -> GroupLookup:
    """`groups` as `user` sees them: its own copy of its group where that is newer than
    the global one (the global copy is written by the group's partition, a moment after
    the user's group call)."""
    copy = user.group_copy if user is not None else None
    return groups if copy is None else overlay_newer(groups, copy)


def overlay_newer(groups: GroupLookup, group: GroupState) -> GroupLookup:
    """`groups`, with `group` where it is newer than the record found."""

    def lookup(group_id: str) -> GroupState | None:
        found = groups(group_id)
        return newer(found, group) if group_id == group.group_id else found

    return lookup


def prefetched(found: Mapping[str, GroupState | None], groups: GroupLookup) -> GroupLookup:
    """`groups`, with the groups read beforehand (`found`, by id: None for a group not
    known) answered from `found`: the runtime reads those a call names once, before the
    step, and the step's lookups of them call nothing back."""
    if not found:
        return groups

    def lookup(group_id: str) -> GroupState | None:
        return found[group_id] if group_id in found else groups(group_id)

    return lookup
