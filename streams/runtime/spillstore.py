"""The spill queues' rows (streams.core.spill) and what this process knows beside them.

`SpillStore` reads and writes a (user, destination)'s index, order and body rows; every
write is made while an event of the user's partition is handled, so it is among that
event's changelog writes (streams.runtime.acks) and the event is acknowledged once
Kafka has it. Beside the rows, in memory:

* `cursor[(user, destination)]`: the ordinal of the next spilled delivery to hand to the
  chain (those before it are on their way, waiting for their spill-done);
* `tails[(user, destination)]`: the ordinal the next spill takes, for queues with rows (found by
  `spill.probe_next` after a start or an assignment, then kept);
* `known`: the (user, destination)s with spilled deliveries, so that a delivery of
  anybody else costs no read of the `spill` table. Complete for a partition once the
  rescan after its assignment has read it (`scanned`), for all of them once `complete`
  (a delivery then reads `known` and `complete`, no call: `routing.Deliveries.add`); until
  then the table is asked. One set for good (emptied and filled, never replaced: the
  senders watch its pairs, `streams.runtime.senders`);
* `confirming`: the numbers delivered and not yet in a spill-done record.

`assigned`/`revoked` keep these to the partitions this worker owns; `owned` None (no
assignment seen: unit tests) means every partition, read from the table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from streams.core import spill
from streams.core.outcome import Dispatch
from streams.core.spill import SpillQueue

Table = MutableMapping[str, Any]
Pair = tuple[str, str]  # (user key, destination)


class SpillStore:
    def __init__(self, index: Table, bodies: Table, partition_of: Callable[[str], int]) -> None:
        self.index = index  # index and order rows
        self.bodies = bodies
        self.partition_of = partition_of
        self.cursor: dict[Pair, int] = {}
        self.tails: dict[Pair, int] = {}  # the ordinal the next spill takes (where the order rows end)
        self.known: set[Pair] = set()
        self.confirming: dict[Pair, list[int]] = {}
        self.flushing: dict[Pair, asyncio.Future] = {}
        self.waiting: set[Pair] = set()  # not drained while their partition catches up
        self.owned: set[int] | None = None
        self.scanned: set[int] | None = None
        self.complete = False  # every owned partition scanned: `known` is all there is
        self.rescan = asyncio.Event()

    # ------------------------------------------------------------------ rows

    def may_have(self, pair: Pair) -> bool:
        """Whether the pair may have spilled deliveries: known to, or its partition not
        read yet. Once every owned partition is read, a pair not known costs nothing."""
        if pair in self.known or self.scanned is None:
            return True
        if self.complete:
            return False
        return self.partition_of(pair[0]) not in self.scanned

    def scanned_partition(self, partition: int) -> None:
        if self.scanned is not None:
            self.scanned.add(partition)
            self.complete = self.owned is not None and self.owned <= self.scanned

    def queue(self, pair: Pair) -> SpillQueue:
        """The pair's queue; read from the table only when it may have one."""
        if not self.may_have(pair):
            return SpillQueue()
        first = spill.first_of(self.index.get(spill.index_key(*pair)))
        next_ = self.tails.get(pair)
        if next_ is None or next_ < first:
            next_ = spill.probe_next(first, lambda n: self.seq_at(pair, n) is not None)
            if next_ > first:  # kept for queues with rows only: not one entry per user asked
                self.tails[pair] = next_
        queue = SpillQueue(first, next_)
        if queue.size > 0:
            self.known.add(pair)
        return queue

    def seq_at(self, pair: Pair, ordinal: int) -> int | None:
        seq = self.index.get(spill.order_key(*pair, ordinal))
        return None if seq is None else int(seq)

    def body(self, pair: Pair, seq: int) -> Any:
        return self.bodies.get(spill.body_key(*pair, seq))

    def append(self, pair: Pair, item: Dispatch, queue: SpillQueue, found: Any) -> bool:
        """Spill `item` (numbered `spill.number_of(item)`) at the end of the pair's `queue`: its body
        and order rows; False when its body is too large for a row (it goes to the chain
        instead). A delivery spilled already (`found`: its body row; its call processed
        again) keeps its place: its order row is written again only if missing."""
        number = spill.number_of(item)
        assert number is not None
        if found is not None:
            ordinal = int(found["n"])
            if self.seq_at(pair, ordinal) is None:
                self.index[spill.order_key(*pair, ordinal)] = number
                self.tails[pair] = max(queue.next, ordinal + 1)
            self.known.add(pair)
            return True
        row = spill.body_row(item, queue.next)
        if not spill.body_fits(row):
            return False
        self.bodies[spill.body_key(*pair, number)] = row
        self.index[spill.order_key(*pair, queue.next)] = number
        self.tails[pair] = queue.next + 1
        self.known.add(pair)
        return True

    def confirm(self, pair: Pair, seqs: Iterable[int]) -> int:
        """Drop the delivered head of the pair's queue (`spill.confirm`), its rows with
        it, and write where it starts now; how many went."""
        self.known.add(pair)  # so that `queue` reads it
        after, dropped = spill.confirm(self.queue(pair), lambda n: self.seq_at(pair, n), seqs)
        for ordinal, seq in dropped:
            _delete(self.index, spill.order_key(*pair, ordinal))
            body = None if seq is None else self.body(pair, seq)
            if seq is not None and body is not None and int(body.get("n", ordinal)) == ordinal:
                # (A call spilled again by a redo whose first body write was lost has a
                # second order row: its body goes with the order row it names.)
                _delete(self.bodies, spill.body_key(*pair, seq))
        if after.size > 0:
            if dropped:
                self.index[spill.index_key(*pair)] = after.row()
            return len(dropped)
        # Empty: the index row goes, and the next spill numbers from 0 again (nothing of
        # this queue is on its way: all of it is confirmed).
        _delete(self.index, spill.index_key(*pair))
        self.known.discard(pair)
        self.cursor.pop(pair, None)
        self.tails.pop(pair, None)
        return len(dropped)

    # ------------------------------------------------------------------ ownership

    def mine(self, user: str) -> bool:
        return self.owned is None or self.partition_of(user) in self.owned

    def assigned(self, partitions: Iterable[int]) -> None:
        """A rebalance gave this worker `partitions`: what it knew of others goes, and
        every owned partition is read again (recovery may have changed its rows)."""
        self.owned = set(partitions)
        self.scanned = set()
        self.complete = not self.owned
        self._forget(lambda user: self.partition_of(user) not in (self.owned or ()))
        self.known.clear()
        self.tails.clear()
        self.rescan.set()

    def stop(self) -> None:
        """The worker stops (its tables close next): nothing more is handed to a chain;
        what was not confirmed is sent again by the next worker."""
        self.owned = set()
        self.rescan.clear()

    def revoked(self, partitions: Iterable[int]) -> None:
        """Before the chains of `partitions` are cancelled: nothing of theirs is handed
        to a chain again (their next owner drains them)."""
        lost = set(partitions)
        if not lost:
            return
        if self.owned is None:
            self.owned = set()  # from now on only what an assignment gives
        self.owned -= lost
        if self.scanned is not None:
            self.scanned -= lost
            self.complete = self.owned <= self.scanned
        self._forget(lambda user: self.partition_of(user) in lost)

    def _forget(self, lost: Callable[[str], bool]) -> None:
        for pairs in (self.cursor, self.tails):
            for pair in [p for p in pairs if lost(p[0])]:
                del pairs[pair]
        self.known.difference_update([p for p in self.known if lost(p[0])])
        self.waiting = {p for p in self.waiting if not lost(p[0])}
        # `confirming` stays: a delivery made is confirmed to whoever owns the user now.


def _delete(table: Table, key: str) -> None:
    if table.get(key) is not None:
        del table[key]
