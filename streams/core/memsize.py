"""An estimate of the memory a decoded value takes in this process, for caches bounded by
bytes (streams.runtime.rowcache, streams.ops.console.journal).

`approx_bytes(value)` walks a value made of what JSON decodes to (dicts, lists, strings,
numbers, booleans, None), and tuples, sets and bytes, and adds CPython's size of each
part (64-bit, measured with `sys.getsizeof` on CPython 3.11): a string 49 bytes plus its
length (more for characters beyond Latin-1: counted as 4 bytes each), a list 56 plus 8
per item, a dict 64 plus about 50 per entry (its hash table at two-thirds load), each
number 28. Any other object counts as OTHER_BYTES. It is an estimate: shared strings
(interned keys) are counted each time they appear, so it errs on the high side; it is
meant to be within a factor of two of `tracemalloc`'s figure for a typical row.
Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

STR_BYTES = 49
BYTES_BYTES = 33
NUMBER_BYTES = 28
LIST_BYTES = 56
ITEM_BYTES = 8
DICT_BYTES = 64
ENTRY_BYTES = 50
SET_BYTES = 216
OTHER_BYTES = 64


def approx_bytes(value: Any) -> int:
    """About how many bytes `value` and everything it holds take (see the module)."""
    kind = type(value)
    if kind is str:
        return STR_BYTES + (len(value) if value.isascii() else 4 * len(value))
    if kind is dict:
        total = DICT_BYTES + ENTRY_BYTES * len(value)
        for key, child in value.items():
            total += _leaf(key) if type(key) is str else approx_bytes(key)
            total += _leaf(child) if type(child) in LEAVES else approx_bytes(child)
        return total
    if kind is list or kind is tuple:
        total = LIST_BYTES + ITEM_BYTES * len(value)
        for child in value:
            total += _leaf(child) if type(child) in LEAVES else approx_bytes(child)
        return total
    if kind in LEAVES:
        return _leaf(value)
    if kind is bytes:
        return BYTES_BYTES + len(value)
    if kind is set or kind is frozenset:
        return SET_BYTES + 2 * ITEM_BYTES * len(value) + sum(approx_bytes(child) for child in value)
    return OTHER_BYTES


def _leaf(value: Any) -> int:
    if type(value) is str:
        return STR_BYTES + (len(value) if value.isascii() else 4 * len(value))
    return 0 if value is None or type(value) is bool else NUMBER_BYTES


LEAVES = frozenset({str, int, float, bool, type(None)})
