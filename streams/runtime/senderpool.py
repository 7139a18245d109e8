"""The senders' pool (streams.runtime.senders) off a delivery's way: what a lane and the
pool hold, setting a key aside (`hold`), cancelling work (`cancel`), stopping (`stop`).

The hot half, what every delivery goes through (`submit`, a sender's loop, one
delivery's run), is `streams.runtime.senders.Lane` and `.Senders`, subclasses of the
classes here; this half is entered only when a key is held, work is cancelled or the
worker stops (docs/architecture.md, "One track's path").
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Any

Make = Callable[[], Awaitable[Any]]
Hold = Callable[[Any], Awaitable[Any] | None]


class Work(asyncio.Future):
    """The future of one submitted piece of work. Cancelling it while its piece runs
    interrupts the sender running it (which goes on with other work)."""

    __slots__ = ("_lane", "_sender")  # set while the piece runs

    _lane: LaneBase | None
    _sender: asyncio.Task | None

    def cancel(self, msg: Any = None) -> bool:
        lane, sender = getattr(self, "_lane", None), getattr(self, "_sender", None)
        cancelled = super().cancel(msg)
        if cancelled and lane is not None and sender is not None:
            lane.interrupt(sender)
        return cancelled


class PoolBase:
    """What the lanes of a pool share: their size, the hold and its gate, the count of
    each key's work and who is told when a watched key's piece leaves."""

    def __init__(self, size: int, hold: Hold | None = None, *, holding: Collection[Any] | None = None) -> None:
        if size < 1:
            raise ValueError("a lane needs at least one sender")
        self.size = size
        self.hold = hold
        # `hold` is asked only while `holding` is not empty (None: always), a read, not a call.
        self.holding = holding
        # Each key's pieces queued or running (the share's measure: streams.runtime.spilling).
        self.counts: Counter[Hashable] = Counter()
        self.watch: Collection[Hashable] = frozenset()  # keys whose pieces' end `ended` is told of
        self.ended: Callable[[Any], None] | None = None
        self._lanes: dict[Hashable, Any] = {}

    async def cancel(self, where: Callable[[Any], bool], timeout: float) -> bool:
        """Cancel the work, queued and running, of the keys matching `where`, and wait
        until their running pieces have stopped; False if some did not within `timeout`."""
        ending = [future for lane in self._lanes.values() for future in lane.cancel(where)]
        if not ending:
            return True
        _, running = await asyncio.wait(ending, timeout=timeout)
        return not running

    async def stop(self, timeout: float) -> bool:
        """Cancel all work and end the senders; False if some did not end within `timeout`."""
        stopped = await self.cancel(lambda key: True, timeout)
        senders: list[asyncio.Task] = []
        for lane in self._lanes.values():
            lane.interrupted.clear()  # a piece still running now is stopped with its sender
            senders += lane.senders
        for sender in senders:
            sender.cancel()
        if senders:
            _, running = await asyncio.wait(senders, timeout=timeout)
            stopped = stopped and not running
        return stopped

    def senders(self) -> int:
        """The sender coroutines running now, across lanes."""
        return sum(len(lane.senders) for lane in self._lanes.values())

    def __len__(self) -> int:
        """The keys with work queued or running."""
        return sum(len(lane.queues) for lane in self._lanes.values())


class LaneBase:
    """One destination's senders, the queues of its keys and the ready queue of keys."""

    def __init__(self, pool: PoolBase) -> None:
        self.pool = pool
        self.size = pool.size
        self.hold = pool.hold
        self.holding = pool.holding
        self.held: dict[Hashable, asyncio.Future] = {}  # keys set aside by `hold`, until it ends
        self.released: set[Hashable] = set()  # keys whose next piece was held already: it runs
        self.queues: dict[Hashable, deque[tuple[Work, Make]]] = {}  # a key with queued or running work
        self.ready: deque[Hashable] = deque()  # keys with queued work and none running
        self.running: dict[Hashable, Work] = {}
        self.ending: dict[Hashable, asyncio.Future] = {}  # keys whose running piece `cancel` waits for
        self.interrupted: set[asyncio.Task] = set()  # senders whose running piece was cancelled
        self.idle: deque[asyncio.Future] = deque()  # a waiter per sender with nothing to do
        self.senders: set[asyncio.Task] = set()

    def _wake(self) -> None:  # the hot half's (streams.runtime.senders.Lane)
        raise NotImplementedError

    def _left(self, key: Hashable) -> None:
        """One piece of `key` left the lane (ran, or cancelled): counted out."""
        counts = self.pool.counts
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]

    def _held(self, key: Hashable) -> bool:
        """Whether `hold` sets the key aside now (its next piece was held already: no)."""
        if key in self.released:
            self.released.discard(key)
            return False
        assert self.hold is not None
        waiting = self.hold(key)
        if waiting is None:
            return False
        held = self.held[key] = asyncio.ensure_future(waiting)
        held.add_done_callback(functools.partial(self._unheld, key))
        return True

    def _unheld(self, key: Hashable, held: asyncio.Future) -> None:
        if self.held.get(key) is not held:
            return  # cancelled (`cancel`)
        del self.held[key]
        if not held.cancelled():
            held.exception()  # the hold's own trouble, if any: the piece runs all the same
        self.released.add(key)
        self.ready.append(key)
        self._wake()

    def interrupt(self, sender: asyncio.Task) -> None:
        self.interrupted.add(sender)
        sender.cancel()

    def _resumed(self, sender: asyncio.Task) -> bool:
        """Whether the sender's cancellation was for the piece it ran: then it serves on."""
        if sender not in self.interrupted:
            return False
        self.interrupted.discard(sender)
        while sender.cancelling():
            sender.uncancel()
        return True

    def cancel(self, where: Callable[[Hashable], bool]) -> list[asyncio.Future]:
        """Cancel the matching keys' work; the futures that end as their running pieces stop."""
        loop = asyncio.get_running_loop()
        ending = []
        for key in [k for k in self.queues if where(k)]:
            queue = self.queues[key]
            for work, _make in queue:
                work.cancel()
                self._left(key)
            queue.clear()
            running = self.running.get(key)
            if running is None:
                del self.queues[key]
                self.released.discard(key)
                held = self.held.pop(key, None)
                if held is not None:
                    held.cancel()
                else:
                    self.ready.remove(key)
                continue
            ending.append(self.ending.setdefault(key, loop.create_future()))
            running.cancel()
        return ending
