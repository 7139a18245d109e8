"""What a destination remembers of users and groups on its own (CustomerSuccessBox's
account and user ids, say): its `Memory`, pure functions that update its slot of their
records (`slots[key]`, a plain JSON object), each slot within `SLOT_MAX_BYTES`. The
core knows no partner: each destination brings its `Memory`. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.message import Message
from streams.core.state import Slots
from streams.core.traits import SLOT_MAX_BYTES, stored_size


@dataclass(frozen=True)
class Memory:
    """What one destination remembers of users and groups, in its own slot of their
    records: pure functions from (slot, message) to the new slot."""

    key: str
    user: Callable[[Mapping[str, Any], Message], Mapping[str, Any]]
    group: Callable[[Mapping[str, Any], Message], Mapping[str, Any]] | None = None


def remembered(slots: Slots, msg: Message, memories: Iterable[Memory], group: bool = False) -> Slots | None:
    """`slots` after each memory saw `msg`, or None when nothing changed. A slot that
    would pass SLOT_MAX_BYTES keeps what it had (an id of a partner is a few bytes; a
    megabyte of them would stop the worker: the changelog refuses the row)."""
    out: dict[str, Mapping[str, Any]] | None = None
    for memory in memories:
        update = memory.group if group else memory.user
        if update is None:
            continue
        before = slots.get(memory.key) or {}
        after = update(before, msg)
        if after is before:  # learnt nothing (most calls): no copies to compare
            continue
        if dict(after) != dict(before) and stored_size(dict(after)) <= SLOT_MAX_BYTES:
            if out is None:
                out = dict(slots)
            out[memory.key] = dict(after)
    return out


def merge_slots(user: Slots, anonymous: Slots) -> Slots:
    """Each destination's slot: what the user has wins, the anonymous profile fills gaps."""
    out = {}
    for key in {*anonymous, *user}:
        merged = {**(anonymous.get(key) or {}), **(user.get(key) or {})}
        out[key] = merged if stored_size(merged) <= SLOT_MAX_BYTES else dict(user.get(key) or {})
    return out
