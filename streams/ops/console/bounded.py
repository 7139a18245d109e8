"""Bounded containers for what the console keeps, with estimates of their bytes: `LRU`
(a mapping whose oldest keys leave once there are too many or they weigh too much)
and `Index` (name -> members, bounded in names, members per name and bytes). The
estimates are the strings' lengths plus CPython's overhead per entry, measured with
`sys.getsizeof` and tracemalloc. Nothing here does I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

STR_BYTES = 49  # a str object, before its characters
ENTRY_BYTES = 120  # an OrderedDict entry (its node, its slot) and the value's tuple
MEMBERS_BYTES = 400  # an empty member LRU (object, OrderedDict)
NUMBER_BYTES = 24  # a float


class LRU:
    """A bounded mapping: `touch` moves a key to the newest end, the oldest leave first
    once there are more than `limit` keys or their sizes (as `touch` is told them) add
    up to more than `max_bytes` (the newest stays, whatever its size)."""

    def __init__(self, limit: int, max_bytes: int | None = None) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0  # the sizes of what is kept, key included
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def touch(self, key: str, value: Any, size: int = 0) -> None:
        """Keep `value` under `key`, newest; `size`: its bytes (the key's are added)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        size += STR_BYTES + ENTRY_BYTES + len(key)
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > self.limit or (
            self.max_bytes is not None and self.bytes > self.max_bytes and len(self._items) > 1
        ):
            self.bytes -= self._items.popitem(last=False)[1][1]

    def get(self, key: str, default: Any = None) -> Any:
        item = self._items.get(key)
        return default if item is None else item[0]

    def entry(self, key: str) -> tuple[Any, int] | None:
        """(value, the size `touch` was last told) of `key`, or None if it is not kept."""
        item = self._items.get(key)
        return None if item is None else (item[0], item[1] - (STR_BYTES + ENTRY_BYTES + len(key)))

    def size(self, key: str) -> int:
        """The size `touch` was last told for `key` (0 if it is not kept)."""
        item = self._items.get(key)
        return 0 if item is None else item[1] - (STR_BYTES + ENTRY_BYTES + len(key))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def newest_first(self) -> list[tuple[str, Any]]:
        return [(key, item[0]) for key, item in reversed(self._items.items())]


class Index:
    """name -> members, each with when it was last seen; bounded in names, in members
    per name (least recently seen leave first), and in bytes over all of them (the
    least recently touched names leave first)."""

    def __init__(self, names: int, members: int, max_bytes: int | None = None) -> None:
        self._names = LRU(names, max_bytes)
        self.members_limit = members

    def add(self, name: str, member: str, now: float) -> None:
        members = self._names.get(name) or LRU(self.members_limit)
        members.touch(member, now, NUMBER_BYTES)
        self._names.touch(name, members, MEMBERS_BYTES + members.bytes)

    def members(self, name: str) -> list[tuple[str, float]]:
        """(member, last seen), most recent first."""
        members = self._names.get(name)
        return members.newest_first() if members else []

    @property
    def bytes(self) -> int:
        return self._names.bytes

    def __len__(self) -> int:
        return len(self._names)
