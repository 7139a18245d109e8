"""Each destination's view of a user's and a group's record under consent: the traits
and group that calls consent kept from it are what they were before
(`streams.core.consent` keeps those views in the records; the step decides on them)."""

from __future__ import annotations

from dataclasses import replace

from streams.core import consent
from streams.core.state import GroupState, UserState, trait_text


def user_seen_by(user: UserState, destination: str) -> UserState:
    """The user as `destination` may see it: the traits and group of calls consent kept
    from it are what they were before (streams.core.consent)."""
    view = user.withheld.get(destination)
    if not view:
        return user
    group_id = consent.group_seen(view, user.group_id)
    copy = user.group_copy if user.group_copy is not None and user.group_copy.group_id == group_id else None
    return replace(user, traits=consent.view_traits(user.traits, view), group_id=group_id, group_copy=copy, withheld={})


def group_seen_by(group: GroupState | None, destination: str) -> GroupState | None:
    """The group as `destination` may see it (streams.core.consent)."""
    view = group.withheld.get(destination) if group is not None else None
    if group is None or not view:
        return group
    traits = consent.view_traits(group.traits, view)
    name = trait_text(traits.get("name")) or (None if consent.hidden(view, "name") else group.name)
    return replace(group, traits=traits, name=name, withheld={})
