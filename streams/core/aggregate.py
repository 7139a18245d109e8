"""Windowed aggregation (`aggregate = "1h"` in the mapping file; docs/mappings.md): the
pure parts.

A destination with a window folds the requests its `decide` would have sent into
tumbling windows of the user, one per (destination, request without its summed field
and timestamp) and window, instead of sending them; when the window closes, ONE request
goes out with the summed field set to the window's sum. Requests that differ only in
that field and their timestamp are the same partner event of the same account and user
(ClientSuccess: the path names the event, the body the organization and the user;
CustomerSuccessBox: account, user, product, module and feature in the body).

* Windows are aligned to the epoch, which is a GMT midnight, and their size divides a
  day (`streams.core.mappingfile.duration`), so no window crosses a GMT midnight.
* A call's window is the one holding the time cs-relay routes it (processing time): a
  window closes at a known moment, and a late or backfilled call never reopens a
  window already sent.
* `Windows` is one user's row of the `windows` table: the open windows and the highest
  by-user offset folded (`offset`), so a call processed again after a crash (the
  at-least-once redo) is not counted twice.
* `CloseIndex` is the worker's in-memory index of users by their earliest close time.

Which requests a destination aggregates, and how the closing request looks, is the
destination's `Aggregation` (its plugin's `aggregation`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streams.core.decision import PartnerRequest
from streams.core.positions import source_of

VERSION = 1
# A user's row of open windows, as stored: far below the changelog's 1 MiB record limit
# (with room for the amounts and counts of its windows to grow).
WINDOWS_MAX_BYTES = 512 * 1024


@dataclass(frozen=True)
class Aggregation:
    """A destination's rule for aggregated requests.

    `field(request)`: the body field summed over a window ("value", "total"), or None
    for a request that is still sent per call. `close(request, amount, start, now)`:
    the request sent when the window starting at `start` (epoch seconds) closes, with
    `amount` (the sum) and the timestamp the partner needs, at `now`."""

    field: Callable[[PartnerRequest], str | None]
    close: Callable[[PartnerRequest, float, float, float], PartnerRequest]


@dataclass(frozen=True)
class Fold:
    """One call's request, to be folded into a window of `destination` (a step's output)."""

    destination: str
    request: PartnerRequest
    field: str


@dataclass(frozen=True)
class Window:
    """One open window: the first call's request, the sum of the summed field, the count."""

    destination: str
    start: float
    size: int
    request: PartnerRequest
    field: str
    amount: float
    count: int

    @property
    def end(self) -> float:
        return self.start + self.size

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "start": self.start,
            "size": self.size,
            "request": self.request.to_dict(),
            "field": self.field,
            "amount": self.amount,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Window:
        return cls(
            data["destination"],
            data["start"],
            data["size"],
            PartnerRequest.from_dict(data["request"]),
            data["field"],
            data["amount"],
            data["count"],
        )


@dataclass(frozen=True)
class Windows:
    """One user's open windows by id, and the highest position folded into them from
    each topic a call is routed from (streams.core.positions): by-user (`offset`) and,
    with CS_RELAY_INPUT_KEYED_BY_USER, input (`input_offset`)."""

    offset: int = -1
    windows: Mapping[str, Window] = field(default_factory=dict)
    input_offset: int = -1

    def folded(self, position: int) -> int:
        """The highest position folded from the topic of `position`."""
        return self.input_offset if source_of(position) == "input" else self.offset

    def to_dict(self) -> dict[str, Any]:
        data = {"v": VERSION, "offset": self.offset, "windows": {k: w.to_dict() for k, w in self.windows.items()}}
        if self.input_offset >= 0:
            data["input_offset"] = self.input_offset
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Windows:
        if not data:
            return cls()
        windows = {k: Window.from_dict(w) for k, w in data["windows"].items()}
        return cls(data["offset"], windows, data.get("input_offset", -1))


def window_start(at: float, size: int) -> float:
    """The start of the tumbling window of `size` seconds holding `at` (epoch-aligned:
    every GMT midnight starts a window)."""
    return float(int(at // size) * size)


def amount_of(request: PartnerRequest, name: str) -> float:
    """The request's summed field, as a number (1 when it is not one)."""
    value = request.json.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return value
    return 1


def window_id(destination: str, request: PartnerRequest, name: str, start: float) -> str:
    """The id of the window of `request`: its destination, start, and a digest of the
    request without the summed field and the timestamp (the partner event it counts)."""
    body = {k: v for k, v in request.json.items() if k not in (name, "timestamp")}
    what = json.dumps([request.method, request.path, dict(request.query), body], sort_keys=True, default=str)
    digest = hashlib.sha256(what.encode("utf-8")).hexdigest()[:20]
    return f"{destination}:{int(start)}:{digest}"


def fold(windows: Windows, folds: Iterable[Fold], *, at: float, sizes: Mapping[str, int], offset: int) -> Windows:
    """`windows` with the requests of the call at `offset` (its position:
    streams.core.positions), routed at `at`, counted in their windows (sizes by
    destination). A call at or below the position already folded from its topic is
    the same call processed again (a redo): nothing changes."""
    return fold_within(windows, folds, at=at, sizes=sizes, offset=offset, max_bytes=None)[0]


def fold_within(
    windows: Windows,
    folds: Iterable[Fold],
    *,
    at: float,
    sizes: Mapping[str, int],
    offset: int,
    max_bytes: int | None = WINDOWS_MAX_BYTES,
) -> tuple[Windows, list[Fold]]:
    """`fold`, keeping the row under `max_bytes` as the table stores it: a request that
    would open a window past it is returned instead, to be sent on its own (as without
    `aggregate`). A user's distinct events in one window, each request carrying their
    name and traits, are otherwise not bounded."""
    folds = list(folds)
    if offset <= windows.folded(offset) or not folds:
        return windows, []
    out = dict(windows.windows)
    size = None  # the row's size, measured when a window is to be opened
    rest: list[Fold] = []
    for f in folds:
        length = sizes[f.destination]
        start = window_start(at, length)
        wid = window_id(f.destination, f.request, f.field, start)
        amount = amount_of(f.request, f.field)
        open_ = out.get(wid)
        if open_ is None:
            window = Window(f.destination, start, length, f.request, f.field, amount, 1)
            if max_bytes is not None:
                size = _stored_size(windows.to_dict()) if size is None else size
                cost = _stored_size({wid: window.to_dict()})  # its braces stand for the comma
                if size + cost > max_bytes:
                    rest.append(f)
                    continue
                size += cost
            out[wid] = window
        else:
            out[wid] = replace(open_, amount=open_.amount + amount, count=open_.count + 1)
    if source_of(offset) == "input":
        return Windows(windows.offset, out, offset), rest
    return Windows(offset, out, windows.input_offset), rest


def _stored_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def due(windows: Windows, now: float) -> list[tuple[str, Window]]:
    """The windows closed at `now` (their end has passed), oldest first."""
    return sorted(((k, w) for k, w in windows.windows.items() if w.end <= now), key=lambda kw: (kw[1].start, kw[0]))


def remove(windows: Windows, ids: Iterable[str]) -> Windows:
    gone = set(ids)
    return replace(windows, windows={k: w for k, w in windows.windows.items() if k not in gone})


def next_close(windows: Windows, skip: Callable[[str], bool] = lambda wid: False) -> float | None:
    """When the user's next window closes (None: none open), ignoring ids `skip` names."""
    ends = [w.end for k, w in windows.windows.items() if not skip(k)]
    return min(ends) if ends else None


def describe(window: Window, wid: str) -> str:
    """What a dead letter of an aggregated request carries instead of a Segment call."""
    return json.dumps(
        {
            "cs-relay-aggregate": {
                "window": wid,
                "destination": window.destination,
                "start": window.start,
                "size": window.size,
                "count": window.count,
                window.field: window.amount,
            }
        }
    )


INDEX_KEY_BYTES = 250  # a key in the CloseIndex: its string, its entry, its heap item
INDEX_MAX_BYTES = 32 * 1024 * 1024  # about 134,000 users with open windows indexed per worker


class CloseIndex:
    """User keys by when their next window closes: a heap with lazy deletion, so the
    tick finds the due users without looking at the others.

    At most `max_keys` keys: past it a key not indexed yet is left out (`overflowed`);
    its windows stay in the table, and once the index has drained to half its bound
    (`wants_rescan`) the worker rescans the table for them (streams.runtime.aggregation),
    so every window is sent, possibly after its close time."""

    def __init__(self, max_keys: int = INDEX_MAX_BYTES // INDEX_KEY_BYTES) -> None:
        self.at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.max_keys = max_keys
        self.overflowed = False

    def __len__(self) -> int:
        return len(self.at)

    def set(self, key: str, close_at: float | None) -> None:
        if close_at is None:
            self.at.pop(key, None)
            return
        if key not in self.at and len(self.at) >= self.max_keys:
            self.overflowed = True
            return
        if self.at.get(key) != close_at:
            self.at[key] = close_at
            heapq.heappush(self._heap, (close_at, key))

    def pop_due(self, now: float) -> list[str]:
        """The keys whose close time has come; they leave the index (the owner's handler
        puts each back with its next close)."""
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            close_at, key = heapq.heappop(self._heap)
            if self.at.get(key) == close_at:
                del self.at[key]
                out.append(key)
        if len(self._heap) > 4 * len(self.at) + 1024:  # stale entries: rebuild
            self._heap = [(t, k) for k, t in self.at.items()]
            heapq.heapify(self._heap)
        return out

    def wants_rescan(self) -> bool:
        return self.overflowed and len(self.at) <= self.max_keys // 2

    def rescan_begins(self) -> None:
        self.overflowed = False

    def clear(self) -> None:
        self.at.clear()
        self._heap.clear()
        self.overflowed = False
