"""What a user's or group's record remembers of their traits and ids, and its bound.

Traits merge with every identify and group call (latest wins), and a user's groups and
merged anonymous ids accumulate: without a bound, a client that sends a new trait name
with every call (a timestamp as a key, say) would grow the user's record until Kafka
refused its changelog write, and the worker would stop on it again and again. The
record keeps `TRAITS_MAX_BYTES` of traits and the last `IDS_KEPT` ids instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRAITS_MAX_BYTES = 64 * 1024  # a user's or group's remembered traits, as compact JSON
IDS_KEPT = 1000  # a user's groups and merged anonymous ids remembered (the latest)


def merge_traits(old: Mapping[str, Any], new: Mapping[str, Any], max_bytes: int = TRAITS_MAX_BYTES) -> dict[str, Any]:
    """`{**old, **new}` (latest wins), kept under `max_bytes` of JSON so that a record
    stays far below Kafka's record limit however many distinct traits a user's calls
    bring over the years: the new traits are all kept (a message is at most 32 KB), and
    of the earlier ones the later-added, as many as fit. The partner received
    the dropped ones when they were sent; only the filling-in of later calls forgets them."""
    merged = {**old, **new}
    if _json_size(merged) <= max_bytes:
        return merged
    budget = max_bytes - _json_size(new)
    kept: list[str] = []
    for name in reversed([k for k in old if k not in new]):
        cost = _json_size({name: old[name]})
        if cost <= budget:
            kept.append(name)
            budget -= cost
    return {**{name: old[name] for name in reversed(kept)}, **new}


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))
