"""The groups as this worker sees them (`GroupView`, the runtime's `groups`): the global
copy, the groups a group call routed here made until the group's partition has written
them, and a user's own copy of its group, in one object.

A group call is applied in its user's partition and written to the global `groups`
table by the group's own partition a moment later (streams.runtime.groups). Meanwhile
this worker's other users see the group as that call left it (`note`): `get` reads it
here before the global copy, until the global copy has caught up (then the entry goes).
The user who made the call keeps its own copy in its row (`UserState.group_copy`), and
sees that where newer (`of`).

The groups noted here are bounded twice, oldest noted first out: at most `max_groups`
groups, and at most `max_bytes` of them by `streams.core.memsize.approx_bytes` (a
group's traits can be tens of KB: 10,000 of them would be hundreds of MB). A group
dropped at the bound, or too large to keep, is read from the global copy instead, as a
worker that did not route the call reads it; its caller still sees its own copy.

`get`, `stored` and `of` (`streams.runtime.rows.GroupReads`) are in the state door,
which a call's routing reads through (`Rows.read`); what is here is the bookkeeping of
the groups noted.

Nothing here is per partition (the global copy is every worker's, what is noted is
dropped once that copy catches up): it has no assignment hooks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from streams.core.memsize import approx_bytes
from streams.core.state import GroupState
from streams.runtime.rows import GroupReads

MAX_GROUPS = 10_000
MAX_BYTES = 8 * 1024 * 1024
ENTRY_BYTES = 200  # the OrderedDict's node and the entry's tuple


class GroupView(GroupReads):
    def __init__(self, table: Mapping[str, Any], max_groups: int = MAX_GROUPS, max_bytes: int = MAX_BYTES) -> None:
        self.table = table  # the global copy (a GlobalTable in the worker)
        self.max_groups = max_groups
        self.max_bytes = max_bytes
        self.bytes = 0  # of the groups noted here
        self._recent: OrderedDict[str, tuple[GroupState, int]] = OrderedDict()

    def note(self, group: GroupState) -> None:
        """A group call routed here made `group`; its partition writes it a moment later
        (streams.runtime.groups). Meanwhile this worker's other users see it (`get`)."""
        self.drop(group.group_id)
        size = ENTRY_BYTES + approx_bytes(group.to_dict())
        if size > self.max_bytes:
            return
        self._recent[group.group_id] = (group, size)
        self.bytes += size
        while len(self._recent) > self.max_groups or self.bytes > self.max_bytes:
            self.bytes -= self._recent.popitem(last=False)[1][1]

    def noted(self) -> list[str]:
        """The ids of the groups noted here, oldest first."""
        return list(self._recent)
