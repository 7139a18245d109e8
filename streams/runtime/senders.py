"""Delivery without a task per request: a fixed pool of sender coroutines per destination.

Work is submitted per key, `(user, destination)` (or `(user, "forward")`): `submit(key,
make)` queues `make` behind the key's earlier work and returns a future of its outcome,
which the event that caused it waits for (`streams.runtime.acks.AckTracker`). Each
destination (the key's second part: a lane) has at most `size` sender coroutines
(`CS_RELAY_MAX_IN_FLIGHT`, started as work comes), and each runs one piece of work at a
time, in its own task: no task is created per request.

* Per key, work runs one piece after another, in submission order, whatever the outcome
  of the one before (failed, cancelled): at most one piece per user per destination at a
  time, as a user's requests to a partner go one after another.
* Across keys, round robin: a sender takes the key at the head of the lane's ready queue,
  runs one piece of its work and puts the key back at the tail if more is queued, so a
  user with a deep queue never holds the others up. A key is in the ready queue at most
  once: what one user (bounded by its share, `streams.runtime.spilling`) or one partition
  queues adds keys, never more senders, and takes a sender's turn only as often as any
  other user's.
* `cancel(where, timeout)`: the work of matching keys (a revoked partition's users), queued
  and running alike, is cancelled, and waited for until the running pieces have stopped.
  Cancelling a returned future cancels that piece alone (the key's next one then runs).
  A piece that raises, or swallows its cancellation, leaves its sender serving the others.
* `hold(key)`, given, is asked before each piece: an awaitable sets the key aside (its
  work waits, in order) until it ends, without a sender: the senders serve the others
  meanwhile (a delivery the catch-up's read-ahead has not cleared, `streams.runtime.
  catchup`, waits for it, then for the caught-up record if its user and partner have an
  earlier owner's record ahead: it cannot take the senders).
  The piece then runs whatever the awaitable's outcome.
* A sender runs in an empty context (`contextvars`), not in a copy of the context of
  the task whose `submit` started it: that is an agent handling an event, and Faust's
  tables read the partition of Faust's current event (`faust.current_event()`, a
  context variable), which would then be that one event's for every user the sender
  serves (their pending rows read from another partition's store: a released delivery
  taken for one confirmed meanwhile, and dropped).
* `stop(timeout)`: the worker stops; everything is cancelled and the senders end.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

Make = Callable[[], Awaitable[Any]]
Hold = Callable[[Any], Awaitable[Any] | None]


class Work(asyncio.Future):
    """The future of one submitted piece of work. Cancelling it while its piece runs
    interrupts the sender running it (which goes on with other work)."""

    __slots__ = ("_lane", "_sender")  # set while the piece runs

    _lane: Lane | None
    _sender: asyncio.Task | None

    def cancel(self, msg: Any = None) -> bool:
        lane, sender = getattr(self, "_lane", None), getattr(self, "_sender", None)
        cancelled = super().cancel(msg)
        if cancelled and lane is not None and sender is not None:
            lane.interrupt(sender)
        return cancelled


class Lane:
    """One destination's senders, the queues of its keys and the ready queue of keys."""

    def __init__(self, size: int, hold: Hold | None = None) -> None:
        self.size = size
        self.hold = hold
        self.held: dict[Hashable, asyncio.Future] = {}  # keys set aside by `hold`, until it ends
        self.released: set[Hashable] = set()  # keys whose next piece was held already: it runs
        self.queues: dict[Hashable, deque[tuple[Work, Make]]] = {}  # a key with queued or running work
        self.ready: deque[Hashable] = deque()  # keys with queued work and none running
        self.running: dict[Hashable, Work] = {}
        self.ending: dict[Hashable, asyncio.Future] = {}  # keys whose running piece `cancel` waits for
        self.interrupted: set[asyncio.Task] = set()  # senders whose running piece was cancelled
        self.idle: deque[asyncio.Future] = deque()  # a waiter per sender with nothing to do
        self.senders: set[asyncio.Task] = set()

    def submit(self, key: Hashable, make: Make) -> Work:
        work = Work()
        queue = self.queues.get(key)
        if queue is None:
            self.queues[key] = queue = deque()
            self.ready.append(key)
            self._wake()
        queue.append((work, make))
        return work

    def _wake(self) -> None:
        while self.idle:
            waiter = self.idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if len(self.senders) < self.size:
            sender = asyncio.get_running_loop().create_task(self._serve(), context=contextvars.Context())
            self.senders.add(sender)
            sender.add_done_callback(self.senders.discard)

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

    async def _serve(self) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        loop = asyncio.get_running_loop()
        ready, queues, running = self.ready, self.queues, self.running
        while True:
            if not ready:
                waiter = loop.create_future()
                self.idle.append(waiter)
                await waiter  # `stop` cancels it
                continue
            key = ready.popleft()
            queue = queues[key]
            if self.hold is not None and self._held(key):
                continue
            work, make = queue.popleft()
            if not work.done():  # not cancelled while queued
                running[key] = work
                await self._run(sender, work, make)
                del running[key]
                if self.ending:
                    ending = self.ending.pop(key, None)
                    if ending is not None:
                        ending.set_result(None)
            if queue:
                ready.append(key)  # to the tail: round robin across keys
            else:
                del queues[key]

    async def _run(self, sender: asyncio.Task, work: Work, make: Make) -> None:
        """Run one piece, its outcome to `work`; raises only when the sender is stopped."""
        work._lane, work._sender = self, sender
        try:
            result = await make()
        except BaseException as exc:  # noqa: BLE001 - the piece's outcome, for whoever awaits it
            work._lane = work._sender = None
            interrupted = self._resumed(sender)
            if isinstance(exc, asyncio.CancelledError):
                work.cancel()
                if not interrupted and sender.cancelling():
                    raise  # the worker stops (`stop`)
            elif not work.done():
                work.set_exception(exc)
            return
        work._lane = work._sender = None
        self._resumed(sender)  # if it swallowed its cancellation
        if not work.done():
            work.set_result(result)

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


class Senders:
    """The pool: a `Lane` of at most `size` senders per destination."""

    def __init__(self, size: int, hold: Hold | None = None) -> None:
        if size < 1:
            raise ValueError("a lane needs at least one sender")
        self.size = size
        self.hold = hold
        self._lanes: dict[Hashable, Lane] = {}

    def submit(self, key: tuple[str, str], make: Make) -> Work:
        lane = self._lanes.get(key[1])
        if lane is None:
            self._lanes[key[1]] = lane = Lane(self.size, self.hold)
        return lane.submit(key, make)

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
