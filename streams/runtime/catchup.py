"""Whether this worker has read, in a by-user partition it was just given, everything an
earlier owner left there that a delivery must wait for.

A delivery that parks carries itself to its user's partition in a `park` record, and
its event is acknowledged once Kafka has that record: the record lies later in the log
than the event, and than the user's next calls. A worker that takes the partition over
(after a crash, or a rebalance) reads it again from the committed offset, and may redo
such a next call before it reads the park record: it would send that call before the
parked one, and, if the call had parked as well, twice (issue 22, finding 3). Nothing in
the tables can say so beforehand: the park was not applied yet.

So on each assignment the worker writes a `caught-up` record (`CaughtUp`, with a token
of its own) at the end of each by-user partition it was given: until it reads its token
back, what it handles was in Kafka before the assignment. Meanwhile it reads the
partitions ahead (`scan_ahead`, streams.runtime.scanahead: up to each token, not through
the reading loops) and notes each (user, destination) with a `park` or `pending-done`
record there. A delivery that starts while the
partition is behind (`hold`, asked by the senders: `streams.runtime.senders`) waits for
that scan, set aside and not on a sender, then goes at once unless its (user,
destination) has such a record ahead. One that has (or any, when the scan could not
read to the token in time, or its pairs would pass the scan's byte bound: then its
partition is left to the token) waits, set aside too, until the token is read, when
every park record an earlier owner produced has been applied, and then goes, or parks
behind what it finds (its park record has the call's own number, so a park of the same
call found there makes it one: `streams.core.pending.park`); a pending-done ahead
likewise keeps a released event from being sent again.
It waits at most the delivery deadline, and not while the reading loops wait for
acknowledgements (a backlog longer than the unacknowledged window: the caught-up record
cannot be read before some of these events are done): then it parks at once
(`streams.runtime.senders.deliver` goes if `cleared`, else parks), its record
behind every earlier one in the log all the same. Before the scan, every delivery of
such a backlog did so (issue 23: 10,010 of 20,000 in a half-size scenario b started
behind a by-user backlog; none with the scan). The wait for the scan itself is bounded
by the same deadline, and goes on under back-pressure: the scan does not need the
reading loops.

The scan also notes each user with any record ahead (`nothing_ahead`): a user's spilled
deliveries drain before the token is read unless the user has some (a call read again
goes before what spilled after it: streams.runtime.spilling). With the input keyed in
place, calls are read again from the input topic instead: `input`
(streams.runtime.inputcatchup) says when that has caught up.

A record of the partition that the scan starts past has been applied here already (the
committed offset only moves past handled records), and one an earlier owner writes
after the token is not waited for, with or without the scan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from streams.runtime.inputcatchup import InputCatchUp
from streams.runtime.scanahead import MAX_BYTES, Reader, Scans

log = logging.getLogger("cs_relay")

RESEND_DELAY = 1.0  # seconds before a caught-up record Kafka refused is written again

Write = Callable[[], Awaitable[object]]  # writes a caught-up record


class CatchUp:
    """Per by-user partition: the token this worker wrote at its last assignment and has
    not read back yet (the partition is *behind* until it does), and what the scan found
    ahead of it (`scans`); per input partition read in place, whether it was read again
    to its end (`input`)."""

    def __init__(self, instance: str, max_bytes: int = MAX_BYTES) -> None:
        self._instance = instance  # tokens are this worker's own: another's are not read as ours
        self.scans = Scans(max_bytes)
        self.input = InputCatchUp()
        self._round = 0
        # The partitions behind, each with the token it awaits (empty while none is: then
        # no key need be hashed, and a delivery asks nothing more here).
        self.awaited: dict[int, str] = {}
        self._reached: dict[int, asyncio.Event] = {}
        self._announcing: set[asyncio.Future] = set()

    @property
    def reader(self) -> Reader | None:
        """The scan's reader of the by-user partitions (None: no scan; the app wires Kafka's)."""
        return self.scans.reader

    @reader.setter
    def reader(self, reader: Reader | None) -> None:
        self.scans.reader = reader

    def assign(self, partitions: Iterable[int], write_for: Callable[[int, str], Write]) -> None:
        """Assigned `partitions`: write each one's caught-up record (`write_for(partition,
        token)` writes it), read them ahead with `reader`, if there is one, and ask for
        the input partitions' bounds, if read in place."""
        partitions = list(partitions)
        tokens = self.begin(partitions)
        for partition, token in tokens.items():
            task = asyncio.ensure_future(announce(self, partition, token, write_for(partition, token)))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
        if tokens and self.reader is not None:
            self.scan_ahead(tokens, self.reader)
        self.input.assign(partitions)

    def begin(self, partitions: Iterable[int]) -> dict[int, str]:
        """Assigned `partitions`: each is behind until its returned token is read back."""
        self._round += 1
        tokens = {p: f"{self._instance}/{self._round}/{p}" for p in partitions}
        for partition in set(self.awaited) - set(tokens):
            self.forget([partition])
        self.scans.stop()  # its tokens are the last round's
        for partition, token in tokens.items():
            self.awaited[partition] = token
            self._reached.setdefault(partition, asyncio.Event()).clear()
            self.scans.drop(partition)
        return tokens

    def scan_ahead(self, tokens: Mapping[int, str], reader: Reader) -> None:
        """Read the partitions of `tokens` (this round's) ahead, up to each token."""
        self.scans.start(tokens, reader)

    async def close(self) -> None:
        """The worker stops: the scan's reader with it, and the question of the input's bounds."""
        await self.scans.close()
        await self.input.close()

    def current(self, partition: int, token: str) -> bool:
        return self.awaited.get(partition) == token

    def reached(self, partition: int, token: str) -> bool:
        """A caught-up record read back in `partition`; True if it was the one awaited."""
        if not self.current(partition, token):
            return False  # an earlier assignment's, or another worker's
        del self.awaited[partition]
        self._reached[partition].set()
        self.scans.drop(partition)
        return True

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked: nothing of these partitions waits any more (their work is cancelled)."""
        partitions = list(partitions)
        for partition in partitions:
            self.awaited.pop(partition, None)
            self.scans.drop(partition)
            event = self._reached.pop(partition, None)
            if event is not None:
                event.set()
        self.input.forget(partitions)

    def behind(self, partition: int) -> bool:
        return partition in self.awaited

    async def clear(
        self, partition: int, key: str, destination: str, timeout: float, give_up: asyncio.Event | None = None
    ) -> bool:
        """Whether a delivery of `key` to `destination` that starts while `partition` is
        behind may go (True): once the scan has read the partition to its token without
        a record of the pair, at once; else as `wait`. The scan is waited for at most
        `timeout` seconds, whatever the reading loops do (it does not need them)."""
        ahead = self.scans.ahead.get(partition)
        if ahead is not None and not ahead.ended.is_set():
            loop = asyncio.get_running_loop()
            started = loop.time()
            await _first(timeout, ahead.ended, self._reached[partition])
            timeout = max(0.0, timeout - (loop.time() - started))
        if self.cleared(partition, key, destination):  # this round's (a rebalance may have begun another)
            return True
        return await self.wait(partition, timeout, give_up)

    def cleared(self, partition: int, key: str, destination: str) -> bool:
        """Whether a delivery of `key` to `destination` may go now: `partition` is not
        behind, or the scan read it to its token without a record of the pair."""
        if not self.behind(partition):
            return True
        ahead = self.scans.ahead.get(partition)
        return ahead is not None and ahead.complete and (key, destination) not in ahead.pairs

    def nothing_ahead(self, partition: int, key: str) -> bool:
        """Whether no record of `key`'s that an earlier owner left in `partition` is still
        to be read: the partition is not behind, or the scan read it to its token and
        found none (a call read again, a park, any other)."""
        if not self.behind(partition):
            return True
        ahead = self.scans.ahead.get(partition)
        return (
            ahead is not None and ahead.complete and ahead.users is not None and key.encode("utf-8") not in ahead.users
        )

    def hold(
        self, partition: int, key: str, destination: str, timeout: float, give_up: asyncio.Event | None = None
    ) -> Awaitable[bool] | None:
        """The senders' hold of a delivery: None if it may go (`cleared`), or parks at once
        (the scan answered, the reading loops at the window); else `clear`'s wait."""
        if self.cleared(partition, key, destination):
            return None
        ahead = self.scans.ahead.get(partition)
        if give_up is not None and give_up.is_set() and (ahead is None or ahead.ended.is_set()):
            return None
        return self.clear(partition, key, destination, timeout, give_up)

    async def wait(self, partition: int, timeout: float, give_up: asyncio.Event | None = None) -> bool:
        """Until `partition` has caught up (True), at most `timeout` seconds, and not once
        `give_up` is set (False): the reading loops wait for acknowledgements (back-
        pressure), so the caught-up record will not be read before some events park."""
        event = self._reached.get(partition)
        if event is None or not self.behind(partition):
            return True
        await _first(timeout, event, *([give_up] if give_up is not None else []))
        return not self.behind(partition)


async def _first(timeout: float, *events: asyncio.Event) -> None:
    """Until one of `events` is set, at most `timeout` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def announce(catchup: CatchUp, partition: int, token: str, write: Write) -> None:
    """Write a partition's caught-up record (`write`), again while Kafka refuses it and the
    token is still awaited: until it is read back, the partition's deliveries park."""
    while catchup.current(partition, token):
        try:
            await write()
            return
        except Exception as exc:  # noqa: BLE001 - Faust wraps the aiokafka error
            log.warning("caught-up record for by-user partition %d refused (%r); writing it again", partition, exc)
            await asyncio.sleep(RESEND_DELAY)
