"""What a user's or group's record remembers of their traits and ids, and its bound.

Traits merge with every identify and group call (latest wins), and a user's groups and
merged anonymous ids accumulate: without a bound, a client that sends a new trait name
with every call (a timestamp as a key, say) would grow the user's record until Kafka
refused its changelog write, and the worker would stop on it again and again. The
record keeps `TRAITS_MAX_BYTES` of traits and the last `IDS_KEPT` ids, at most
`IDS_MAX_BYTES` of them, instead (an id is at most 256 bytes: streams.core.idlimits).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRAITS_MAX_BYTES = 64 * 1024  # a user's or group's remembered traits, as compact JSON
IDS_KEPT = 1000  # a user's groups and merged anonymous ids remembered (the latest)
IDS_MAX_BYTES = 32 * 1024  # and at most this much of each list, as JSON
ADOPTED_KEPT = 100  # hand-overs remembered per user (a re-sent one comes within moments)
SLOT_MAX_BYTES = 16 * 1024  # what one destination remembers of a user or group, as JSON


def latest_entries(
    entries: Mapping[str, Any], count: int = ADOPTED_KEPT, max_bytes: int = IDS_MAX_BYTES
) -> dict[str, Any]:
    """The latest (last inserted) of `entries`: at most `count` and `max_bytes` of JSON."""
    kept: list[str] = []
    size = 2
    for name in reversed(list(entries)[-count:]):
        cost = stored_size({name: entries[name]})  # its braces stand for its comma
        if size + cost > max_bytes:
            break
        kept.append(name)
        size += cost
    return {name: entries[name] for name in reversed(kept)}


def latest_ids(ids: tuple[str, ...], count: int = IDS_KEPT, max_bytes: int = IDS_MAX_BYTES) -> tuple[str, ...]:
    """The latest (last) of `ids`: at most `count` of them and at most `max_bytes` as a
    JSON list; the oldest go first."""
    if len(ids) <= count and stored_size(ids) <= max_bytes:
        return tuple(ids)  # the usual case, in one measure
    kept: list[str] = []
    size = 2  # the brackets
    for ident in reversed(ids[-count:]):
        cost = stored_size(ident) + 1  # and its comma
        if size + cost > max_bytes:
            break
        kept.append(ident)
        size += cost
    return tuple(reversed(kept))


def merge_traits(old: Mapping[str, Any], new: Mapping[str, Any], max_bytes: int = TRAITS_MAX_BYTES) -> dict[str, Any]:
    """`{**old, **new}` (latest wins), kept under `max_bytes` of JSON so that a record
    stays far below Kafka's record limit however many distinct traits a user's calls
    bring over the years: the new traits are all kept (a message is at most 32 KB), and
    of the earlier ones the later-added, as many as fit. The partner received
    the dropped ones when they were sent; only the filling-in of later calls forgets them."""
    merged = {**old, **new}
    if stored_size(merged) <= max_bytes:
        return merged
    budget = max_bytes - stored_size(new)
    kept: list[str] = []
    for name in reversed([k for k in old if k not in new]):
        cost = stored_size({name: old[name]})
        if cost <= budget:
            kept.append(name)
            budget -= cost
    return {**{name: old[name] for name in reversed(kept)}, **new}


def stored_size(value: Any) -> int:
    """Bytes of `value` as a table stores it (Faust's json codec: compact, non-ASCII
    escaped, so a character takes up to 6 bytes: `\\u00e9`)."""
    return len(json.dumps(value, separators=(",", ":"), default=str))
