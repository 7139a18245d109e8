"""Windowed aggregation in the worker (`aggregate` in the mapping file; the pure parts
are `streams.core.aggregate`).

* `route_call` folds an aggregated destination's requests into the user's row of the
  `windows` table (`fold_call`), in the user's partition, with the call's by-user
  offset: a call processed again after a crash is not counted twice.
* Every WINDOW_TICK a timer (`tick`) takes the users whose window has closed from the
  in-memory `CloseIndex` and sends a `window-close` record to each of their partitions
  (at most CLOSE_BATCH users a record).
* There (`window_close`) each closed window's one request goes through the normal
  delivery path (after the user's earlier requests to the partner; parked, retried or
  dead-lettered like any delivery); when that delivery is finished, a `window-done`
  record to the user removes the window (`window_done`). A worker that dies before
  the window-done is applied leaves the window in the table: whoever owns the partition
  next sends it again. So a window's request is sent once, plus at most once more per
  crash or rebalance that falls between its send and its window-done.
* The index is rebuilt from the table when partitions are assigned (`rescan`), a
  partition at a time, yielding to the event loop every RESCAN_CHUNK rows; a window
  that closed while no worker owned it is found there and sent.

Why a plain table rather than Faust's windowed tables: docs/architecture.md (Tables).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from streams.core.aggregate import Fold, Windows, describe, due, fold_within, next_close, remove
from streams.core.control import WindowClose, WindowDone
from streams.core.incoming import Incoming
from streams.core.outcome import Dispatch
from streams.destinations import REGISTRY
from streams.runtime import effects, senders
from streams.runtime.runtime import Runtime
from streams.runtime.tablescan import chunks_of_partition

log = logging.getLogger("cs_relay")

WINDOW_TICK = 1.0  # seconds between looks for closed windows
ANSWER_WAIT = 30.0  # a user whose close was asked for is not asked for again before then
CLOSE_BATCH = 500  # users per window-close record
RESCAN_CHUNK = 500  # rows read between two yields to the event loop


def windows_of(rt: Runtime, key: str) -> Windows:
    return Windows.from_dict(rt.tables.windows.get(key))


def store_windows(rt: Runtime, key: str, before: Windows, after: Windows) -> None:
    """Write the user's row when it changed, and note when its next window closes."""
    if after != before:
        rt.tables.windows[key] = after.to_dict()
    rt.windows.index.set(key, next_close(after, skip=closing(rt, key)))


def closing(rt: Runtime, key: str) -> Callable[[str], bool]:
    """Whether a window of the user is on its way (sent, its window-done not applied)."""
    return lambda wid: (key, wid) in rt.windows.closing


def fold_call(rt: Runtime, key: str, offset: int, folds: Sequence[Fold], now: float) -> list[Fold]:
    """In the user's partition: count the call's aggregated requests in their windows;
    returns those that would pass the row's bound (WINDOWS_MAX_BYTES), to send alone."""
    if not folds:
        return []
    before = windows_of(rt, key)
    sizes = {d.key: d.window for d in rt.destinations if d.window}
    after, rest = fold_within(before, folds, at=now, sizes=sizes, offset=offset)
    if after is not before:
        for f in folds:
            rt.counters[f"aggregated.{f.destination}" if f not in rest else f"not_aggregated.{f.destination}"] += 1
    store_windows(rt, key, before, after)
    return rest


async def tick(rt: Runtime) -> None:
    """Send a `window-close` record to each partition with users whose window closed."""
    if rt.windows.index.wants_rescan():  # users with open windows were left out of the index
        rt.windows.rescan.set()
    if rt.windows.rescan.is_set() and rt.recovered():
        rt.windows.rescan.clear()
        await rescan(rt)
    now = rt.clock()
    by_partition: dict[int, list[str]] = {}
    for key in rt.windows.index.pop_due(now):
        by_partition.setdefault(rt.partition_of(key), []).append(key)
        rt.windows.index.set(key, now + ANSWER_WAIT)  # until the partition answers (it resets this)
    for partition, keys in by_partition.items():
        for i in range(0, len(keys), CLOSE_BATCH):
            await effects.control_to_partition(rt, partition, WindowClose(tuple(keys[i : i + CLOSE_BATCH])))


async def rescan(rt: Runtime) -> None:
    """Rebuild the index of open windows from the table (the partitions assigned to
    this worker: its standbys' databases are open too, but their windows are the active
    owner's to close), in chunks. A new assignment during the scan stops it: the next
    tick scans again. It indexes users the bounded index left out, too (CloseIndex)."""
    rt.windows.index.rescan_begins()
    for partition in sorted(rt.owned):
        for chunk in chunks_of_partition(rt.tables.windows, partition, rt.partition_of, RESCAN_CHUNK):
            for key, data in chunk:
                try:
                    windows = Windows.from_dict(data)
                except (ValueError, KeyError, TypeError):
                    log.warning("aggregation rescan: a windows row unreadable by this version was skipped")
                    continue
                rt.windows.index.set(key, next_close(windows, skip=closing(rt, key)))
            await asyncio.sleep(0)
            if rt.windows.rescan.is_set():
                return


def window_close(rt: Runtime, record: Incoming, close: WindowClose) -> list[Awaitable[Any]]:
    """In the partition of `close.keys`: send each closed window's one request, through
    the normal delivery path; its `window-done` removes it once the delivery is over."""
    now = rt.clock()
    work: list[Awaitable[Any]] = []
    for key in close.keys:
        before = windows_of(rt, key)
        after = before
        for wid, window in due(before, now):
            if (key, wid) in rt.windows.closing:
                continue  # on its way already
            plugin = next((p for p in REGISTRY if p.key == window.destination), None)
            if plugin is None or plugin.aggregation is None or window.destination not in rt.clients:
                log.warning("aggregation window %s dropped: %s is not enabled", wid, window.destination)
                rt.counters[f"windows_dropped.{window.destination}"] += 1
                after = remove(after, [wid])
                continue
            request = plugin.aggregation.close(window.request, window.amount, window.start, now)
            item = Dispatch(window.destination, request, describe(window, wid), record.source, f"aggregate:{wid}")
            rt.windows.closing.add((key, wid))
            rt.counters[f"windows_closed.{window.destination}"] += 1
            work.append(
                rt.sending.senders.submit((key, window.destination), partial(deliver_window, rt, key, item, wid))
            )
        store_windows(rt, key, before, after)
    return work


async def deliver_window(rt: Runtime, key: str, item: Dispatch, wid: str) -> None:
    try:
        await senders.deliver(rt, key, item)  # delivered, parked or dead-lettered
        await effects.control_to_user(rt, key, WindowDone(wid))
    except BaseException:
        # No window-done will clear the mark: let a later tick send the window again.
        rt.windows.closing.discard((key, wid))
        rt.windows.index.set(key, rt.clock() + ANSWER_WAIT)
        raise


def window_done(rt: Runtime, record: Incoming, done: WindowDone) -> list[Awaitable[Any]]:
    """In the user's partition: the window's request is out of its hands; remove it."""
    key = record.key.decode("utf-8") if record.key else ""
    rt.windows.closing.discard((key, done.window))
    before = windows_of(rt, key)
    store_windows(rt, key, before, remove(before, [done.window]))
    return []
