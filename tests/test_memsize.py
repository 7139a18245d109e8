"""streams.core.memsize: the byte estimate that bounds the caches, against CPython's
own sizes of the same values (`sys.getsizeof` over every part)."""

from __future__ import annotations

import json
import sys

from streams.core.memsize import approx_bytes


def _deep_size(value, seen=None):
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        size += sum(_deep_size(v, seen) for v in value)
    return size


ROW = json.dumps(
    {
        "v": 2,
        "user_id": "user-000123",
        "group_id": "group-42",
        "traits": {"email": "someone@example.com", "name": "Some One", "plan": "pro", "seats": 12},
        "slots": {"csb": {"account_id": "acct-42", "user_id": "u-123", "at": 1733500000.25}},
        "ids": [[f"message-{i:06d}", i, 1733500000.5 + i] for i in range(50)],
    }
)


def test_the_estimate_is_close_to_cpythons_sizes_of_a_decoded_row():
    row = json.loads(ROW)
    estimate, actual = approx_bytes(row), _deep_size(row)
    assert 0.75 * actual <= estimate <= 1.5 * actual, (estimate, actual)


def test_large_strings_and_containers_count_by_their_size():
    assert approx_bytes("x" * 1_000_000) >= 1_000_000
    assert approx_bytes("é" * 1000) >= 2000
    assert approx_bytes(b"x" * 5000) >= 5000
    assert approx_bytes(list(range(10_000))) >= 10_000 * 8 + 10_000 * 28
    assert approx_bytes({str(i): None for i in range(1000)}) >= 1000 * (49 + 40)
    assert approx_bytes((1, "a", {2}, frozenset(), None, True, 1.5, object())) > 0
    assert approx_bytes(None) == 0
