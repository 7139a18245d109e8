"""What a step hands the runtime: the new state (`Step`), the requests to deliver
(`Dispatch`) and the dead letters (`DeadLetter`), with the words of a dead letter for
an event that waited too long or too many (`pending_dead_letter`) and a destination's
reject reason (`reject_reason`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.aggregate import Fold
from streams.core.decision import PartnerRequest
from streams.core.pending import Item, Pending
from streams.core.reasons import Reason
from streams.core.state import GroupState, UserState


@dataclass(frozen=True)
class Dispatch:
    """A request to deliver, with what a dead letter would need if it fails."""

    destination: str
    request: PartnerRequest
    raw: str
    source: Mapping[str, Any]
    message_id: str
    released_seq: int | None = None  # set when the event comes out of the pending queue
    # A call sent at once: the number it parks under (`first_seq` of its record, which
    # holds nothing for this destination), the same when the call is redone.
    seq: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    reason: Reason | str  # a str only for a destination's own reject reason not (yet) in the enum
    detail: str
    raw: str | bytes  # bytes: an input record that did not parse (it may not even be UTF-8)
    source: Mapping[str, Any]
    stage: str
    destination: str | None = None
    # What it is to its user, the same under redo: `destination#number` of the event
    # (streams.core.deadletter.identity_of); None when it has no number.
    ident: str | None = None


@dataclass(frozen=True)
class Step:
    user: UserState
    group: GroupState | None
    pending: Pending
    dispatches: list[Dispatch] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    merge_from: str | None = None  # an anonymous profile to fold into this user
    folds: list[Fold] = field(default_factory=list)  # requests for the user's open windows
    # (groupId, updated_at of the record seen or None): the user began holding events
    # until that group is known; the group's partition is asked to say when it is.
    wait_for: tuple[str, str | None] | None = None
    denied: list[str] = field(default_factory=list)  # destinations consent kept the call from


def pending_dead_letter(
    item: Item, dest: str, reason: Reason, bound: float, adopted_from: str | None = None
) -> DeadLetter:
    if adopted_from is not None:
        detail = (
            f"taking over the events visitor {adopted_from!r} made before logging in would have made more than "
            f"{int(bound)} events wait for {dest} for this user; the newest went here: replay them "
            "(cs-relay dlq replay) to deliver them as this user"
        )
    elif reason == Reason.PENDING_OVERFLOW:
        detail = (
            f"more than {int(bound)} events waiting for {dest} for this user; the oldest was dropped from the queue"
        )
    else:
        detail = f"waited longer than {int(bound)} s for {dest} to be able to attribute it"
    return DeadLetter(reason, detail, item.raw, item.source, "routing", dest, f"{dest}#{item.seq}")


def reject_reason(text: str) -> Reason | str:
    """A destination's reject reason: the shared enum member when it is one; otherwise the
    destination's own word, kept as it is, so a new destination needs no core change."""
    try:
        return Reason(text)
    except ValueError:
        return text
