"""The catch-up's scan (streams.runtime.catchup): after an assignment, a reader of its
own (`Reader`, streams.runtime.readahead on Kafka) reads each by-user partition from the
committed offset up to the caught-up record this worker wrote there (its token), not
through the reading loops, and notes in an `Ahead` per partition what an earlier owner
left there: each (user, destination) with a `park` or `pending-done` record, and each
user with any record at all.

What it keeps is bounded by bytes (MAX_BYTES over all partitions, for the pairs and the
users apart): a partition whose pairs would pass it is given up (its deliveries wait for
the token), and one whose users would, keeps its pairs but notes no users (its spilled
queues wait for the token). So is one not read to its token within SCAN_SECONDS, or
whose reader failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

from streams.core import control
from streams.core.control import CaughtUp, Park, PendingDone

log = logging.getLogger("cs_relay")

SCAN_SECONDS = 30.0  # the scan of an assignment's partitions gives up on those not read to their token by then
CLOSE_SECONDS = 5.0  # for the scan's reader to close when the worker stops
MAX_BYTES = 4 * 1024 * 1024  # the pairs noted by the scan, over all partitions (about 20,000); the users as much
PAIR_BYTES = 200  # per (user, destination) noted, besides the key's length, erring high

# (partition, key, headers, value) of a by-user record, as the scan reads it.
Scanned = tuple[int, bytes | None, Mapping[str, bytes], bytes]
# Reads the by-user partitions in `partitions` from their committed offsets on, a batch
# at a time, until closed; a partition taken out of the (live) set is no longer wanted.
Reader = Callable[[set[int]], AsyncGenerator[Sequence[Scanned], None]]
_AHEAD_KINDS = frozenset({Park.KIND, PendingDone.KIND})


class Ahead:
    """What the scan found in one partition between the committed offset and the token."""

    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()  # (user key, destination) with a record ahead
        self.bytes = 0
        self.users: set[bytes] | None = set()  # user keys with any record ahead; None: too many to note
        self.user_bytes = 0
        self.complete = False  # read up to the token: no other pair has a record ahead
        self.ended = asyncio.Event()  # complete, or given up (its deliveries wait for the token)


class Scans:
    """The `Ahead` of each partition being, or read, ahead this round, within max_bytes."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.reader: Reader | None = None  # None: no scan, every delivery while behind waits (the app wires Kafka's)
        self.max_bytes = max_bytes
        self.ahead: dict[int, Ahead] = {}
        self.bytes = 0  # the pairs of every Ahead
        self.user_bytes = 0  # the users of every Ahead
        self._scanning: set[int] = set()  # the current scan's partitions not read to their token yet
        self._tasks: set[asyncio.Future] = set()

    def start(self, tokens: Mapping[int, str], reader: Reader) -> None:
        """Read the partitions of `tokens` (this round's) ahead, up to each token."""
        aheads = {p: self.ahead.setdefault(p, Ahead()) for p in tokens}
        self._scanning = set(tokens)
        task = asyncio.ensure_future(self._scan(dict(tokens), aheads, self._scanning, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scan(self, tokens: dict[int, str], aheads: dict[int, Ahead], scanning: set[int], read: Reader) -> None:
        try:
            async with asyncio.timeout(SCAN_SECONDS), contextlib.aclosing(read(scanning)) as batches:
                async for batch in batches:
                    for partition, key, headers, value in batch:
                        if partition in scanning:
                            self._note(partition, tokens[partition], aheads[partition], scanning, key, headers, value)
                    if not scanning:
                        return
        except Exception as exc:  # noqa: BLE001 - any failure of the reader: the tokens are waited for
            log.warning("reading by-user partitions %s ahead failed (%r); their deliveries wait", sorted(scanning), exc)
        finally:
            for partition in scanning:
                self._give_up(aheads[partition])
            scanning.clear()

    def _note(
        self,
        partition: int,
        token: str,
        ahead: Ahead,
        scanning: set[int],
        key: bytes | None,
        headers: Mapping[str, bytes],
        value: bytes,
    ) -> None:
        kind = headers.get(control.KIND_HEADER)
        if key and kind != CaughtUp.KIND:
            self._note_user(ahead, key)
        if kind is None or (kind not in _AHEAD_KINDS and kind != CaughtUp.KIND):
            return
        try:
            record = control.decode(headers, value)
            user = key.decode("utf-8") if key else ""
        except (ValueError, KeyError, TypeError):  # the reading loop dead-letters it; here, we cannot tell
            record = None
        if isinstance(record, CaughtUp):
            if not user and record.token == token:
                scanning.discard(partition)
                ahead.complete = True
                ahead.ended.set()
            return
        size = PAIR_BYTES + len(user)
        if not isinstance(record, Park | PendingDone) or not user or self.bytes + size > self.max_bytes:
            scanning.discard(partition)  # left to the token
            self._give_up(ahead)
            return
        pair = (user, record.destination)
        if pair not in ahead.pairs:
            ahead.pairs.add(pair)
            ahead.bytes += size
            self.bytes += size

    def _note_user(self, ahead: Ahead, key: bytes) -> None:
        users = ahead.users
        if users is None or key in users:
            return
        size = PAIR_BYTES + len(key)
        if self.user_bytes + size > self.max_bytes:  # too many: the partition's spills wait for the token
            self.user_bytes -= ahead.user_bytes
            ahead.users, ahead.user_bytes = None, 0
            return
        users.add(key)
        ahead.user_bytes += size
        self.user_bytes += size

    def _give_up(self, ahead: Ahead) -> None:
        if not ahead.complete:
            self._release(ahead)
        ahead.ended.set()

    def drop(self, partition: int) -> None:
        """What was noted of `partition` goes (read to its token, revoked, or a new round)."""
        self._scanning.discard(partition)
        ahead = self.ahead.pop(partition, None)
        if ahead is not None:
            self._release(ahead)
            ahead.ended.set()

    def _release(self, ahead: Ahead) -> None:
        self.bytes -= ahead.bytes
        self.user_bytes -= ahead.user_bytes
        ahead.pairs, ahead.bytes = set(), 0
        ahead.users, ahead.user_bytes = set(), 0

    def stop(self) -> None:
        self._scanning.clear()
        for task in self._tasks:
            task.cancel()

    async def close(self) -> None:
        """The worker stops: the scan's reader with it (given CLOSE_SECONDS to close)."""
        self.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_SECONDS)
