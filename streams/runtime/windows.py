"""The runtime's aggregation windows in this process (`Windows`, the runtime's `windows`;
the windows themselves are rows of the `windows` table, the flow is
streams.runtime.aggregation): the users by their next window's close time (`index`,
streams.core.aggregate.CloseIndex, bounded by bytes), the windows whose request is on
its way until their `window-done` (`closing`), and the flag that asks the close tick to
rescan the table (`rescan`).

`assigned(partitions)`: the index is rebuilt from the table of what is ours now (the
rescan), and the windows closing for users of partitions that went elsewhere are
theirs. A revocation changes nothing here: the assignment that ends the rebalance does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from streams.core.aggregate import CloseIndex


class Windows:
    def __init__(self, partition_of: Callable[[str], int]) -> None:
        self.partition_of = partition_of
        self.index = CloseIndex()
        self.closing: set[tuple[str, str]] = set()  # (user key, window id)
        self.rescan = asyncio.Event()

    def assigned(self, partitions: Iterable[int]) -> None:
        owned = set(partitions)
        self.index.clear()
        self.closing = {(k, w) for k, w in self.closing if self.partition_of(k) in owned}
        self.rescan.set()
