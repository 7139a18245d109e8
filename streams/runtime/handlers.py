"""The control records of the by-user topic, each kind's handler (`HANDLERS`), in the
partition that owns its key; the routing door (streams.runtime.routing) hands each
control record here, by kind, and routes a Segment call itself. The handlers of a
flow's kinds live with the flow (merge, groups, sweep, retries, aggregation,
spilling); those of no flow of their own are here.

Every handler is synchronous: state read, state written, and the work still to finish
(deliveries, dead letters, records) returned as awaitables that the record's
acknowledgement waits for (`streams.runtime.acks.AckTracker`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from streams.core.control import (
    CaughtUp,
    GroupKnown,
    GroupUpdate,
    GroupWait,
    MergeDone,
    MergeProfile,
    MergeRequest,
    Park,
    PendingDone,
    Retried,
    RetryDue,
    Sweep,
    WindowClose,
    WindowDone,
)
from streams.core.incoming import Incoming
from streams.core.outcome import Dispatch, Step
from streams.core.pending import confirm
from streams.core.releasing import release_ready
from streams.core.spill import SpillDone
from streams.runtime import aggregation, groups, merge, retries, routing, spilling, sweep
from streams.runtime.runtime import Runtime

Work = list[Awaitable[Any]]
Handler = Callable[[Runtime, Incoming, Any], Work]


def pending_done(rt: Runtime, record: Incoming, done: PendingDone) -> Work:
    """A released event's delivery finished: it leaves `releasing`, and held events
    that waited for room there (streams.core.releasing.release_ready's limit) follow."""
    assert record.key is not None  # control records to a user are keyed by the user
    key = record.key.decode("utf-8")
    pending = confirmed = confirm(rt.rows.pending(key), done.destination, done.seq)
    released: list[Dispatch] = []
    user, destination = rt.rows.user(key), rt.destination(done.destination)
    held = pending.queue(done.destination).held
    if user is not None and destination is not None and held and rt.parking.marks.parking[(key, done.destination)] == 0:
        limit = rt.settings.pending_max_events
        pending, released = release_ready(pending, destination, user, rt.groups.of(user), limit)
    work: Work = []
    if user is None or pending == confirmed:
        rt.rows.store_pending(key, pending)  # (apply_step writes only what differs from `confirmed`)
    if user is not None:
        # As after a call, the released events no delivery in this process carries are
        # sent again: this record handled again (a revoke or a crash stopped its first
        # handling's deliveries) finds in `releasing` what that one released, and
        # nothing else would send it if the user sends nothing more.
        work = routing.apply_step(rt, key, confirmed, Step(user, None, pending, released), stored=user)
    # Only now is the event out of `releasing`; until this record is applied, a later
    # event of the user must not send it again.
    rt.sending.in_flight.discard((key, done.destination, done.seq))
    return work


def caught_up(rt: Runtime, record: Incoming, marker: CaughtUp) -> Work:
    """This worker's caught-up record, read back: the partition's deliveries no longer
    wait (streams.runtime.catchup). Another worker's, or an earlier one's, is ignored."""
    if rt.parking.catchup.reached(record.partition, marker.token):
        rt.counters["caught_up"] += 1
    return []


# Control record kind -> its handler (read-only: built once, here).
HANDLERS: Mapping[type, Handler] = MappingProxyType(
    {
        PendingDone: pending_done,
        MergeRequest: merge.give_profile,
        MergeProfile: merge.take_profile,
        MergeDone: merge.handed,
        GroupUpdate: groups.update_group,
        GroupWait: groups.add_waiter,
        GroupKnown: groups.group_known,
        Sweep: sweep.sweep,
        Park: retries.apply_park,
        RetryDue: retries.start_retries,
        Retried: retries.apply_retried,
        WindowClose: aggregation.window_close,
        WindowDone: aggregation.window_done,
        CaughtUp: caught_up,
        SpillDone: spilling.spill_done,
    }
)
