"""Where a routed record stands in its user's partition, as one number.

The state keeps the position of the record that changed it: a messageId's dedupe row
(a redo of the same record is told from a duplicate), the numbers of the events a
record adds to a pending queue (`streams.core.pending.first_seq`), the last call an
aggregation window counted. A by-user record's position is its offset, as it was
before input records were routed directly, so that state written then keeps its
meaning.

With `CS_RELAY_INPUT_KEYED_BY_USER` the worker also routes the input topic's records
where they are. Their partition is the user's by-user partition, but their offsets
count another topic, so they would collide with by-user offsets: input positions
are numbered from `INPUT_BASE` up instead. Positions are unique per partition; they
increase within each topic, not across the two (`source_of` tells them apart).
"""

from __future__ import annotations

from typing import Literal

# Above any by-user offset a partition will reach (4.4e12 records), and low enough
# that `first_seq` (position x 2**20) stays below 2**63.
INPUT_BASE = 1 << 42

Source = Literal["by-user", "input"]


def position(offset: int, *, from_input: bool) -> int:
    if offset < 0 or offset >= INPUT_BASE:
        raise ValueError(f"offset {offset} is outside the positions cs-relay numbers (0 to {INPUT_BASE - 1})")
    return INPUT_BASE + offset if from_input else offset


def source_of(position: int) -> Source:
    return "input" if position >= INPUT_BASE else "by-user"
