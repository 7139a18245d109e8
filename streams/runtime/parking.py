"""Parking in this process (`Parking`, the runtime's `parking`): what it knows, outside the
tables, about its users' parked deliveries (`ParkingMarks`), the age of the oldest parked
delivery per destination (`OldestParked`), the catch-up of newly assigned partitions
(`streams.runtime.catchup.CatchUp`: deliveries wait for an earlier owner's park records),
and the flag that asks the retry tick to rescan the pending table (`rescan`).

`Parking.assigned(partitions)`: the marks of partitions that went elsewhere go, the new
ones are caught up with (a `caught-up` record each), and the retry tick looks for
parked deliveries. `Parking.revoked(lost)`, once the users' work is cancelled: their
marks go, and their catch-up.

The index of users with parked deliveries (when each one's next retry is due, since when
its oldest parked delivery waits) is bounded by bytes: an outage parks every active
user's deliveries, and an entry per user grew with them (about USER_BYTES each,
measured with devtools/memusers.py). Past MAX_BYTES a user is left out: its deliveries
stay parked in the table, durable as ever. Once the index has drained to half its
bound (`wants_rescan`), the retry timer rescans the pending table (in chunks, as after
an assignment: streams.runtime.retries.rescan) and indexes those it finds, up to the
bound again. So every parked delivery is retried, none before its time; a user left out
waits longer for its retry while the index is full (during an outage of its partner,
its retries would fail anyway). While users are left out, the age gauge reads no
younger than the oldest delivery left out (it may read older until the next rescan,
if that delivery went meanwhile).
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable

from streams.core import pending as pending_mod
from streams.core.pending import Pending
from streams.runtime.catchup import CatchUp, Write

USER_BYTES = 400  # per user indexed, erring high: measured 220 with one destination parked (devtools/memusers.py)
MAX_BYTES = 32 * 1024 * 1024  # about 84,000 users with parked deliveries indexed per worker


class Parking:
    def __init__(
        self,
        *,
        instance: str,
        partition_of: Callable[[str], int],
        destinations: Collection[str],
        deadline: float,
        pressed: asyncio.Event,
        caught_up: Callable[[int, str], Write] | None = None,
    ) -> None:
        self.partition_of = partition_of
        self.destinations = destinations  # those with a client: the deliveries a catch-up holds
        self.deadline = deadline  # the longest a delivery is held for the catch-up
        self.pressed = pressed  # set under back-pressure: a held delivery stops waiting
        self.caught_up = caught_up  # the write of a partition's caught-up record (the runtime's)
        # Park records in transit, parked heads being retried, when each user's next retry is due.
        self.marks = ParkingMarks()
        # Assigned partitions whose reading has not caught up with what an earlier owner
        # left there: their deliveries wait for it (streams.runtime.catchup).
        self.catchup = CatchUp(instance)  # its reader of the partitions, wired by the app
        self.rescan = asyncio.Event()  # set on assignment: look for parked deliveries

    def index_retry(self, key: str, pending: Pending) -> None:
        """Note when the user's next retry is due, and since when its oldest parked
        delivery per destination has waited (the age gauge of /metrics); the counts of
        /status are told of writes (`Rows.store_pending`) and of the rescan's reads."""
        self.marks.index(
            key,
            pending_mod.next_retry_at(pending),
            {dest: min(p.first_failed_at for p in q.parked) for dest, q in pending.queues.items() if q.parked},
        )

    def catching_up(self, key: str, destination: str) -> bool:
        """Whether a delivery of `key` to `destination` must not go yet: its partition has
        not caught up with an earlier owner's records, and the read-ahead did not clear
        the pair (streams.runtime.catchup); no hashing of the key while none is behind."""
        return bool(self.catchup.awaited) and not self.catchup.cleared(self.partition_of(key), key, destination)

    def hold(self, chain: tuple[str, str]) -> Awaitable[bool] | None:
        """The senders' hold (streams.runtime.senders): a delivery the read-ahead has not
        cleared waits for it, then for the caught-up record if it must (`CatchUp.hold`),
        set aside rather than on a sender."""
        key, destination = chain
        if not self.catchup.awaited or destination not in self.destinations:
            return None
        return self.catchup.hold(self.partition_of(key), key, destination, self.deadline, give_up=self.pressed)

    def assigned(self, partitions: set[int]) -> None:
        """The parked deliveries of users in partitions that went elsewhere, and their
        park records in transit, are the next owner's now (it finds them in the table);
        ours would be stale if the partitions returned. Those that stayed keep theirs.
        Newly owned users may have parked deliveries: the next retry tick looks for them."""
        self.marks.reassigned(partitions, self.partition_of)
        assert self.caught_up is not None, "wired by the runtime"
        self.catchup.assign(partitions, self.caught_up)
        self.rescan.set()

    def revoked(self, lost: set[int]) -> None:
        """The users of `lost` (by-user partitions) are nobody's here now, their work
        cancelled: a park cancelled before the producer had its record would leave a mark
        that nothing clears, holding the user's later calls to that partner for good if
        the partition comes back (issue 22, finding 2). Whoever reads the partition next
        knows only what is in Kafka, this worker too."""
        self.marks.forget(lost, self.partition_of)
        self.catchup.forget(lost)


class ParkingMarks:
    """What this process knows, outside the tables, about its users' parked deliveries.

    * `parking[(user, destination)]`: park records produced but not applied yet; while
      one is on its way, the user's later events for that destination wait.
    * `parks`: how many park records this process has applied, of any user (a delivery
      dispatched when its user had none parked reads its pending row again only if
      this moved since: `streams.runtime.senders.deliver`).
    * `retrying`: (user, destination, seq) of parked heads being retried, from the start
      of a retry until its `retried` record is applied, so a head is not retried twice.
    * `retry_due_at[user]`: when the user's next retry is due.
    * `parked_since`: when each user's oldest parked delivery per destination first
      failed (`OldestParked`), for the age gauge of `/metrics`.

    The records that clear a mark are applied by whoever owns the user's partition at
    the time. When a partition is revoked, its users' marks go (`Parking.revoked`,
    once their deliveries and retries are cancelled): the next owner may apply those
    records instead, a park cancelled before its record was produced never clears its
    mark, and a mark left behind would, if the partition came back, block that user's
    destination (parking) or skip its parked head forever (retrying). Whoever reads
    the partition next, this worker included, rebuilds what it needs from Kafka.
    `reassigned`, at the end of each rebalance, forgets as well the partitions this
    worker had and lost without a revocation (a lost member).

    `retry_due_at` and `parked_since` hold at most `max_bytes` of users (`index`; see
    the module). `parking` and `retrying` are not bounded here, and cannot drop an
    entry (a user's later deliveries would overtake its parked one, or a head be
    retried twice): a `parking` entry lives while its park record is on its way, one
    per (user, destination) whatever the parks in transit; `retrying`, while a retry
    runs (a task of its own, the larger cost: streams.runtime.retries).
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.parking: Counter[tuple[str, str]] = Counter()
        self.parks = 0
        self.retrying: set[tuple[str, str, int]] = set()
        self.retry_due_at: dict[str, float] = {}
        self.parked_since = OldestParked()
        self.max_users = max(1, max_bytes // USER_BYTES)
        self.overflowed = False  # some users with parked deliveries are left out of the index
        self._owned: set[int] = set()

    def index(self, key: str, due_at: float | None, oldest: dict[str, float]) -> None:
        """Note when `key`'s next retry is due (None: nothing parked) and since when its
        oldest parked delivery per destination waits; a user not indexed yet is left out
        while the index is full (see the module)."""
        if due_at is None:
            self.retry_due_at.pop(key, None)
            self.parked_since.update(key, oldest)
            return
        if key not in self.retry_due_at and len(self.retry_due_at) >= self.max_users:
            self.overflowed = True
            self.parked_since.left_out(oldest)
            return
        self.retry_due_at[key] = due_at
        self.parked_since.update(key, oldest)

    def postpone(self, key: str, due_at: float) -> None:
        """`key`'s next retry is due at `due_at`, if it is indexed (one left out is
        found by the next rescan)."""
        if key in self.retry_due_at:
            self.retry_due_at[key] = due_at

    def wants_rescan(self) -> bool:
        """Users were left out and the index has drained to half its bound: time to look
        for them in the table."""
        return self.overflowed and len(self.retry_due_at) <= self.max_users // 2

    def rescan_begins(self) -> None:
        """The rescan indexes again whoever it finds (and leaves out again past the bound)."""
        self.overflowed = False
        self.parked_since.left_out_since.clear()

    def reassigned(self, partitions: Iterable[int], partition_of: Callable[[str], int]) -> None:
        """A rebalance gave this worker `partitions` (by-user): forget the users of the
        partitions it had before and does not have now."""
        owned = set(partitions)
        self.forget(self._owned - owned, partition_of)
        self._owned = owned

    def forget(self, partitions: Iterable[int], partition_of: Callable[[str], int]) -> None:
        """Drop every mark of the users in `partitions` (by-user partitions)."""
        lost = set(partitions)
        if not lost:
            return
        for key in [k for k in self.retry_due_at if partition_of(k) in lost]:
            del self.retry_due_at[key]
        self.parked_since.forget(lambda key: partition_of(key) in lost)
        for pair in [p for p in self.parking if partition_of(p[0]) in lost]:
            del self.parking[pair]
        self.retrying.difference_update([r for r in self.retrying if partition_of(r[0]) in lost])


class OldestParked:
    """When the oldest parked delivery of each destination first failed, over the users
    of this worker's partitions, kept up to date as pending records are written
    (`Rows.store_pending`, and the retry rescan after an assignment) so that a scrape
    reads it without scanning the pending table.

    Per destination: `user -> first_failed_at` of the user's oldest parked delivery, and
    a min-heap of (first_failed_at, user) whose stale entries (the user's time changed or
    went) are dropped when they reach the top; the heap is rebuilt when stale entries
    outnumber live ones, so it stays within twice the users with parked deliveries.
    """

    def __init__(self) -> None:
        self._since: dict[str, dict[str, float]] = {}
        self._heaps: dict[str, list[tuple[float, str]]] = {}
        # The oldest first_failed_at per destination of the users left out of the index
        # (ParkingMarks.index), until the next rescan.
        self.left_out_since: dict[str, float] = {}

    def left_out(self, oldest: dict[str, float]) -> None:
        for dest, since in oldest.items():
            self.left_out_since[dest] = min(since, self.left_out_since.get(dest, since))

    def update(self, user: str, oldest: dict[str, float]) -> None:
        """`oldest`: destination -> first_failed_at of the user's oldest parked delivery
        there (destinations without parked deliveries left out)."""
        for dest in set(self._since) | set(oldest):
            since = self._since.setdefault(dest, {})
            value = oldest.get(dest)
            if value is None:
                since.pop(user, None)
            elif since.get(user) != value:
                since[user] = value
                heap = self._heaps.setdefault(dest, [])
                heapq.heappush(heap, (value, user))
                if len(heap) > 2 * len(since) + 64:
                    self._heaps[dest] = [(t, u) for u, t in since.items()]
                    heapq.heapify(self._heaps[dest])

    def forget(self, lost: Callable[[str], bool]) -> None:
        """Drop the users for which `lost(user)` (their partition went elsewhere)."""
        for since in self._since.values():
            for user in [u for u in since if lost(u)]:
                del since[user]

    def oldest(self) -> dict[str, float]:
        """destination -> the earliest first_failed_at, for destinations with parked deliveries."""
        out: dict[str, float] = {}
        for dest, since in self._since.items():
            heap = self._heaps.get(dest, [])
            while heap and since.get(heap[0][1]) != heap[0][0]:
                heapq.heappop(heap)
            if heap:
                out[dest] = heap[0][0]
        for dest, first in self.left_out_since.items():
            out[dest] = min(first, out.get(dest, first))
        return out

    def ages(self, now: float) -> dict[str, float]:
        """destination -> seconds since its oldest parked delivery first failed."""
        return {dest: max(0.0, now - since) for dest, since in self.oldest().items()}
