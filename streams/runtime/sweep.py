"""The sweep: what a user's own next message would clean up, done for users who went
quiet. Hourly (CS_RELAY_SWEEP_INTERVAL_SECONDS) a timer sends a `sweep` record to every
by-user partition; in the partition's own stream, held events past their age bound are
dead-lettered, parked deliveries past the retry window too (even when no retry result
comes), and expired dedupe rows are pruned. It must run there: a table write goes to
the changelog partition of the event being processed.

A partition may hold many users, and a handler runs on the event loop without a
pause: one `sweep` record reads at most SWEEP_CHUNK rows (of `pending`, then of
`seen`), in key order from its cursor, and sends the next record to the same partition
with the cursor moved on. Between two chunks the partition's other records, and every
other task, get their turn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any

from streams.core import dedupe, pendingrows, seenpack
from streams.core import pending as pending_mod
from streams.core.control import Sweep
from streams.core.incoming import Incoming
from streams.core.outcome import DeadLetter
from streams.core.pending import Parked, Pending
from streams.core.reasons import Reason
from streams.core.releasing import expire_held
from streams.core.versions import Readable
from streams.runtime import effects, seenpacks
from streams.runtime.runtime import Runtime
from streams.runtime.tablescan import items_of_partition
from streams.settings import Settings

log = logging.getLogger("cs_relay")

SWEEP_CHUNK = 500  # rows one sweep record reads before it hands on to the next
TABLES = ("pending", "seen")  # swept in this order


async def request_sweeps(rt: Runtime) -> None:
    """Ask every by-user partition to sweep itself."""
    for partition in range(rt.partitions()):
        await effects.control_to_partition(rt, partition, Sweep())


def sweep(rt: Runtime, record: Incoming, step: Sweep) -> list[Awaitable[Any]]:
    """Sweep one chunk of the record's partition (only its keys are touched) and send
    the record of the next chunk, if any."""
    partition = record.partition
    name = step.table if step.table in TABLES else TABLES[0]
    table = rt.tables.pending if name == "pending" else rt.tables.seen
    owner = rt.partition_of if name == "pending" else _seen_owner(rt)
    rows = list(islice(items_of_partition(table, partition, owner, after=step.after), SWEEP_CHUNK + 1))
    chunk = rows[:SWEEP_CHUNK]
    work = _sweep_pending(rt, partition, chunk) if name == "pending" else _sweep_seen(rt, partition, chunk)
    following: Sweep | None = None
    if len(rows) > SWEEP_CHUNK:
        following = Sweep(name, chunk[-1][0])
    elif name != TABLES[-1]:
        following = Sweep(TABLES[TABLES.index(name) + 1])
    if following is not None:
        work.append(effects.control_to_partition(rt, partition, following))
    return work


def _sweep_pending(rt: Runtime, partition: int, rows: list[tuple[str, Any]]) -> list[Awaitable[Any]]:
    """Held events past their age bound, and parked deliveries past the retry window
    (unless a retry of one is under way: its `retried` record decides), dead-lettered."""
    now, s = rt.clock(), rt.settings
    work: list[Awaitable[Any]] = []
    pendings = Readable(pendingrows.index_only)
    for key, index in pendings.each(rows):

        def busy(dest: str, seq: int, key: str = key) -> bool:
            return (key, dest, seq) in rt.parking.marks.retrying

        if not _expires(index, now, s, busy):
            continue  # the common case, decided on the index row alone
        before = rt.rows.pending(key)  # with the events' bodies, for their dead letters
        after, dead = expire_held(before, now, s.pending_max_age_seconds)
        after, exhausted = pending_mod.expire_parked(after, now, s.retry_window_seconds, busy)
        dead += [_exhausted(dest, parked, s.retry_window_seconds) for dest, parked in exhausted]
        if dead:
            rt.rows.store_pending(key, after)
            work += [effects.dead_letter(rt, d, key.encode("utf-8")) for d in dead]
    _skipped(partition, "pending", pendings.skipped)
    return work


def _expires(index: Pending, now: float, s: Settings, busy: Callable[[str, int], bool]) -> bool:
    return bool(
        pending_mod.expire(index, now, s.pending_max_age_seconds)[1]
        or pending_mod.expire_parked(index, now, s.retry_window_seconds, busy)[1]
    )


def _exhausted(dest: str, parked: Parked, window: float) -> DeadLetter:
    detail = (
        f"{parked.last_error or 'no answer'} (after {parked.attempts} attempts; retried for longer than "
        f"{int(window)} s, dead-lettered by the sweep)"
    )
    ident = f"{dest}#{parked.seq}"  # as a retry giving up on it would name it
    return DeadLetter(Reason.RETRIES_EXHAUSTED, detail, parked.raw, parked.source, "delivery", dest, ident)


def _seen_owner(rt: Runtime) -> Any:
    def owner(key: str) -> int:
        try:
            if seenpack.is_pack_key(key):
                return seenpack.partition_of_pack(key)
            return rt.partition_of(dedupe.user_of(key))
        except (ValueError, IndexError, TypeError):
            return -1  # unreadable by this version: left alone

    return owner


def _sweep_seen(rt: Runtime, partition: int, rows: list[tuple[str, Any]]) -> list[Awaitable[Any]]:
    """Dedupe rows past the window deleted: an index row of a packed row from the store
    alone (it has no changelog record), a packed row whose entries have all expired with
    a tombstone (and its index rows that are still its own), a row of an older version
    with a tombstone; a user's record of an older version pruned to the window, deleted
    once empty."""
    now, s = rt.clock(), rt.settings
    seen = rt.tables.seen
    legacy_rows = []
    for key, value in rows:
        if seenpack.is_pack_key(key):
            _sweep_pack(rt, partition, key, value)
            continue
        if not dedupe.is_row_key(key):
            legacy_rows.append((key, value))
            continue
        try:
            expired = dedupe.row_expired(value, now, s.dedupe_window_seconds)
        except (ValueError, IndexError, TypeError):
            continue
        if expired and seenpack.is_packed_index(value):
            seenpacks.delete_local(seen, partition, key)
        elif expired:
            del seen[key]
    seens = Readable(dedupe.Seen.from_dict)
    for key, seen_before in seens.each(legacy_rows):
        seen_after = dedupe.prune(seen_before, now, window=s.dedupe_window_seconds, max_ids=s.dedupe_max_ids_per_user)
        if seen_after.empty:
            del seen[key]
        elif seen_after is not seen_before:
            seen[key] = seen_after.to_dict()
    _skipped(partition, "seen", seens.skipped)
    return []


def _sweep_pack(rt: Runtime, partition: int, key: str, value: Any) -> None:
    now, window, seen = rt.clock(), rt.settings.dedupe_window_seconds, rt.tables.seen
    try:
        if not seenpack.pack_expired(value, now, window):
            return
        # The store keeps a summary (its index rows are deleted as they expire, above,
        # in key order before it); a store that keeps the whole row, its entries.
        entries = seenpack.expand(value) if "e" in value else []
    except (ValueError, IndexError, TypeError, KeyError, AttributeError):
        return  # unreadable by this version: left alone
    del seen[key]  # the tombstone, in the changelog of the sweep record's partition
    for index_key, _ in entries:
        row = seen.get(index_key)  # a newer entry of the same id has a row of its own
        if row is not None and seenpack.is_packed_index(row) and dedupe.row_expired(row, now, window):
            seenpacks.delete_local(seen, partition, index_key)


def _skipped(partition: int, table: str, skipped: int) -> None:
    if skipped:
        log.warning(
            "sweep of partition %d: %d %s records unreadable by this version were skipped", partition, skipped, table
        )
