"""Whether this worker has read, in a by-user partition it was just given, everything an
earlier owner left there.

A delivery that parks carries itself to its user's partition in a `park` record, and
its event is acknowledged once Kafka has that record: the record lies later in the log
than the event, and than the user's next calls. A worker that takes the partition over
(after a crash, or a rebalance) reads it again from the committed offset, and may redo
such a next call before it reads the park record: it would send that call before the
parked one, and, if the call had parked as well, twice (issue 22, finding 3). Nothing in
the tables can say so beforehand: the park was not applied yet.

So on each assignment the worker writes a `caught-up` record (`CaughtUp`, with a token
of its own) at the end of each by-user partition it was given. Until it reads its token
back, what it handles was in Kafka before the assignment: a delivery of the partition's
users that starts meanwhile (`streams.runtime.effects.deliver`) waits until the token is
read, when every park record an earlier owner produced has been applied, and then goes,
or parks behind what it finds (its park record has the call's own number, so a park of
the same call found there makes it one: `streams.core.pending.park`). One that starts
later finds those applied already.
It waits at most the delivery deadline, and not while the reading loops wait for
acknowledgements (a backlog longer than the unacknowledged window: the caught-up record
cannot be read before some of these events are done): then it parks at once, its record
behind every earlier one in the log all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger("cs_relay")

RESEND_DELAY = 1.0  # seconds before a caught-up record Kafka refused is written again


class CatchUp:
    """Per by-user partition: the token this worker wrote at its last assignment and has
    not read back yet (the partition is *behind* until it does)."""

    def __init__(self, instance: str) -> None:
        self._instance = instance  # tokens are this worker's own: another's are not read as ours
        self._round = 0
        self._tokens: dict[int, str] = {}
        self._reached: dict[int, asyncio.Event] = {}

    def begin(self, partitions: Iterable[int]) -> dict[int, str]:
        """Assigned `partitions`: each is behind until its returned token is read back."""
        self._round += 1
        tokens = {p: f"{self._instance}/{self._round}/{p}" for p in partitions}
        for partition in set(self._tokens) - set(tokens):
            self.forget([partition])
        for partition, token in tokens.items():
            self._tokens[partition] = token
            self._reached.setdefault(partition, asyncio.Event()).clear()
        return tokens

    def current(self, partition: int, token: str) -> bool:
        return self._tokens.get(partition) == token

    def reached(self, partition: int, token: str) -> bool:
        """A caught-up record read back in `partition`; True if it was the one awaited."""
        if not self.current(partition, token):
            return False  # an earlier assignment's, or another worker's
        del self._tokens[partition]
        self._reached[partition].set()
        return True

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked: nothing of these partitions waits any more (their work is cancelled)."""
        for partition in partitions:
            self._tokens.pop(partition, None)
            event = self._reached.pop(partition, None)
            if event is not None:
                event.set()

    def behind(self, partition: int) -> bool:
        return partition in self._tokens

    async def wait(self, partition: int, timeout: float, give_up: asyncio.Event | None = None) -> bool:
        """Until `partition` has caught up (True), at most `timeout` seconds, and not once
        `give_up` is set (False): the reading loops wait for acknowledgements (back-
        pressure), so the caught-up record will not be read before some events park."""
        event = self._reached.get(partition)
        if event is None or not self.behind(partition):
            return True
        waits = [asyncio.ensure_future(event.wait())]
        if give_up is not None:
            waits.append(asyncio.ensure_future(give_up.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return not self.behind(partition)


async def announce(catchup: CatchUp, partition: int, token: str, write: Callable[[], Awaitable[object]]) -> None:
    """Write a partition's caught-up record (`write`), again while Kafka refuses it and the
    token is still awaited: until it is read back, the partition's deliveries park."""
    while catchup.current(partition, token):
        try:
            await write()
            return
        except Exception as exc:  # noqa: BLE001 - Faust wraps the aiokafka error
            log.warning("caught-up record for by-user partition %d refused (%r); writing it again", partition, exc)
            await asyncio.sleep(RESEND_DELAY)
