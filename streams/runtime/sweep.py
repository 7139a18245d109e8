"""The sweep: what a user's own next message would clean up, done for users who went
quiet. Hourly (CS_RELAY_SWEEP_INTERVAL_SECONDS) a timer sends a `sweep` record to every
by-user partition; in the partition's own stream, expired dedupe rows are pruned and
held events past their age bound are dead-lettered. It must run there: a table write
goes to the changelog partition of the event being processed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from streams.core import dedupe
from streams.core.control import Sweep
from streams.core.pending import Pending
from streams.core.state import Readable
from streams.core.step import expire_held
from streams.runtime import effects
from streams.runtime.runtime import Incoming, Runtime
from streams.runtime.tablescan import items_of_partition

log = logging.getLogger("cs_relay")


async def request_sweeps(rt: Runtime) -> None:
    """Ask every by-user partition to sweep itself."""
    for partition in range(rt.partitions()):
        await effects.control_to_partition(rt, partition, Sweep())


def sweep(rt: Runtime, record: Incoming, _: Sweep) -> list[Awaitable[Any]]:
    """Prune the dedupe records of this partition's users and dead-letter their held
    events past the age bound. Only keys of the record's partition are touched."""
    partition = record.partition
    now = rt.clock()
    s = rt.settings
    work: list[Awaitable[Any]] = []
    pendings, seens = Readable(Pending.from_dict), Readable(dedupe.Seen.from_dict)
    for key, before in pendings.each(list(items_of_partition(rt.tables.pending, partition, rt.partition_of))):
        after, dead = expire_held(before, now, s.pending_max_age_seconds)
        if dead:
            rt.store_pending(key, after)
            work += [effects.dead_letter(rt, d, key.encode("utf-8")) for d in dead]
    seen = rt.tables.seen
    for key, seen_before in seens.each(list(items_of_partition(seen, partition, rt.partition_of))):
        seen_after = dedupe.prune(seen_before, now, window=s.dedupe_window_seconds, max_ids=s.dedupe_max_ids_per_user)
        if seen_after.empty:
            del seen[key]
        elif seen_after is not seen_before:
            seen[key] = seen_after.to_dict()
    if pendings.skipped or seens.skipped:
        log.warning(
            "sweep of partition %d: %d records unreadable by this version were skipped",
            partition,
            pendings.skipped + seens.skipped,
        )
    return work
