"""With CS_RELAY_INPUT_KEYED_BY_USER: whether this worker has read again, in an input
partition it was just given, every record that was there at the assignment.

Calls are then read from the input topic itself, where nothing of this worker's can be
written, so the by-user partition's caught-up record (streams.runtime.catchup) says
nothing of them: after a restart or a take-over, a user's calls not acknowledged before
(a delivery on its way, say) are read again from the input topic, while the deliveries
that spilled after them wait in their rows (streams.runtime.spilling). Those must not
drain first: a later event would reach the partner before an earlier one.

So on each assignment the worker asks Kafka (`Bounds`, streams.runtime.readahead) for
each input partition's committed offset and end (the offset after its last record: a
transaction marker after it is never handed to the intake). A partition is *behind*
until the intake has handled the record before that end (the reading position it
reports: `Redeliveries.read_to`), or at once if the committed offset is at the end
already; and while Kafka has not answered. Every call older than a spilled delivery
lies before that end (the earlier owner read both from this partition, in order), and a
record written after the assignment is newer than every spilled one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

log = logging.getLogger("cs_relay")

RETRY_DELAY = 1.0  # seconds before Kafka is asked again for the bounds it did not give
CLOSE_SECONDS = 5.0  # for the question to Kafka to end when the worker stops

# The input partitions' (committed offset, offset after the last record), for the partitions asked.
Bounds = Callable[[set[int]], Awaitable[Mapping[int, tuple[int, int]]]]


class InputCatchUp:
    def __init__(self) -> None:
        self.bounds: Bounds | None = None  # None: the input is not read in place, nothing to wait for
        self._ends: dict[int, int] = {}  # the partitions behind, each with the end to read to
        self._unknown: set[int] = set()  # assigned, their bounds not known yet
        self._asking: asyncio.Future | None = None

    def assign(self, partitions: Iterable[int]) -> None:
        """Assigned `partitions` (all of this round's): each is behind until read to its end."""
        if self.bounds is None:
            return
        self._stop()
        self._ends.clear()
        self._unknown = set(partitions)
        if self._unknown:
            self._asking = asyncio.ensure_future(self._ask(self.bounds, self._unknown))

    async def _ask(self, bounds: Bounds, unknown: set[int]) -> None:
        while unknown:
            try:
                found = await bounds(set(unknown))
            except Exception as exc:  # noqa: BLE001 - any failure of Kafka's: asked again, the partitions wait
                log.warning("the input partitions' offsets could not be read (%r); asking again", exc)
                found = {}
            if unknown is not self._unknown:
                return  # another round's
            for partition, (committed, end) in found.items():
                if partition in unknown:
                    unknown.discard(partition)
                    if committed < end:
                        self._ends[partition] = end
            if unknown:
                await asyncio.sleep(RETRY_DELAY)

    def caught_up(self, partition: int, read_to: int | None) -> bool:
        """Whether `partition` has nothing older left to read again: given `read_to`,
        the offset after the last record the intake has handled since the assignment."""
        if partition in self._unknown:
            return False
        end = self._ends.get(partition)
        if end is None:
            return True
        if read_to is None or read_to < end:
            return False
        del self._ends[partition]
        return True

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked: nothing of these partitions waits any more."""
        for partition in partitions:
            self._unknown.discard(partition)
            self._ends.pop(partition, None)

    def _stop(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None

    async def close(self) -> None:
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()
            await asyncio.wait([asking], timeout=CLOSE_SECONDS)
