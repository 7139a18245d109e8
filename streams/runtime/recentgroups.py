"""The groups a group call routed here made, until the group's partition has written them.

A group call is applied in its user's partition and written to the global `groups`
table by the group's own partition a moment later (streams.runtime.groups). Meanwhile
this worker's other users see the group as that call left it: `Runtime.group` reads it
here before the global copy, until the global copy has caught up (then the entry goes).

Bounded twice, oldest noted first out: at most `max_groups` groups, and at most
`max_bytes` of them by `streams.core.memsize.approx_bytes` (a group's traits can be tens
of KB: 10,000 of them would be hundreds of MB). A group dropped at the bound, or too
large to keep, is read from the global copy instead, as a worker that did not route
the call reads it; the user who made the call keeps its own copy in its row
(`UserState.group_copy`), so its own events see the change at once either way.
"""

from __future__ import annotations

from collections import OrderedDict

from streams.core.memsize import approx_bytes
from streams.core.state import GroupState

MAX_GROUPS = 10_000
MAX_BYTES = 8 * 1024 * 1024
ENTRY_BYTES = 200  # the OrderedDict's node and the entry's tuple


class RecentGroups:
    def __init__(self, max_groups: int = MAX_GROUPS, max_bytes: int = MAX_BYTES) -> None:
        self.max_groups = max_groups
        self.max_bytes = max_bytes
        self.bytes = 0
        self._groups: OrderedDict[str, tuple[GroupState, int]] = OrderedDict()

    def get(self, group_id: str) -> GroupState | None:
        entry = self._groups.get(group_id)
        return None if entry is None else entry[0]

    def note(self, group: GroupState) -> None:
        self.drop(group.group_id)
        size = ENTRY_BYTES + approx_bytes(group.to_dict())
        if size > self.max_bytes:
            return
        self._groups[group.group_id] = (group, size)
        self.bytes += size
        while len(self._groups) > self.max_groups or self.bytes > self.max_bytes:
            self.bytes -= self._groups.popitem(last=False)[1][1]

    def drop(self, group_id: str) -> None:
        entry = self._groups.pop(group_id, None)
        if entry is not None:
            self.bytes -= entry[1]

    def ids(self) -> list[str]:
        return list(self._groups)

    def __len__(self) -> int:
        return len(self._groups)
