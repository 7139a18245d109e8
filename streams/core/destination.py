"""A destination as the core sees it: its key, its Segment integration name, its rule
(`decide`), its aggregation and its consent categories; and how it decides on its own
view of the state, where what consent kept from it did not change (`decide`). The
partners themselves live in streams.destinations. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streams.core.aggregate import Aggregation, Fold
from streams.core.consentview import group_seen_by, user_seen_by
from streams.core.decision import Decision, PartnerRequest
from streams.core.message import Message
from streams.core.state import GroupLookup, GroupState, UserState


@dataclass(frozen=True)
class Destination:
    """A partner as the core sees it: its key, its Segment integration name, its rule."""

    key: str
    integration_name: str
    decide: Callable[[Message, UserState, GroupLookup], Decision]
    # `aggregate` of the mapping file: the window in seconds and the destination's rule
    # (both set, or neither); a request the rule names is folded, not sent.
    window: int | None = None
    aggregation: Aggregation | None = None
    # `consent` of the mapping file: the categories a call must grant (streams.core.consent).
    consent: frozenset[str] = frozenset()

    def fold(self, request: PartnerRequest) -> Fold | None:
        """The fold of `request` into a window, when this destination aggregates it."""
        if self.window is None or self.aggregation is None:
            return None
        name = self.aggregation.field(request)
        return Fold(self.key, request, name) if name is not None else None


def decide(dest: Destination, msg: Message, user: UserState, groups: GroupLookup) -> Decision:
    """The destination's decision on its own view of the state: what calls consent kept
    from it did not change for it (streams.core.consent)."""
    if not dest.consent:
        return dest.decide(msg, user, groups)

    def seen(group_id: str) -> GroupState | None:
        return group_seen_by(groups(group_id), dest.key)

    return dest.decide(msg, user_seen_by(user, dest.key), seen)
