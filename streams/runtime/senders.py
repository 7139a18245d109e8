"""Delivery without a task per request: a fixed pool of sender coroutines per destination.

Work is submitted per key, `(user, destination)` (or `(user, "forward")`): `submit(key,
make)` queues `make` behind the key's earlier work and returns a future of its outcome,
which the event that caused it waits for (`streams.runtime.acks.AckTracker`);
`submit_all(pieces)` submits several `(key, make)` in one call, in the order given (a
step's deliveries, `streams.runtime.routing.Deliveries`). Each destination (the key's
second part: a lane) has at most `size` sender coroutines (`CS_RELAY_MAX_IN_FLIGHT`,
started as work comes), and each runs one piece of work at a time, in its own task: no
task is created per request.

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
* `hold(key)`, given, is asked before each piece while `holding` (in the worker, the
  catch-up's awaited partitions) is not empty, or always if that is None: an awaitable sets the key aside (its
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
* `counts[key]`: the pieces of each key queued or running, kept by the lanes (the
  fairness share's measure, `streams.runtime.spilling`); as a piece of a key in `watch`
  leaves, `ended(key)` is told (a spilled queue's next deliveries go to its chain).

One delivery's run is here too (`deliver`, the piece a dispatch submits: the checks
before it goes, the request through `streams.runtime.delivery`, what its answer
makes of it), so that a step's deliveries enter this module once, at `submit_all`
(all of them in one call, but when spilling is asked about a pair with some of the
step's ahead: `streams.runtime.routing.Deliveries`), and each then runs in a sender's
task; what is off that way (cancelling, holding, stopping) is
`streams.runtime.senderpool`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

from streams.core.breaker import AUTH_STATUSES
from streams.core.control import PendingDone
from streams.core.decision import PartnerRequest
from streams.core.outcome import DeadLetter, Dispatch
from streams.core.reasons import Reason
from streams.core.retry import Outcome
from streams.runtime import effects
from streams.runtime.delivery import Answers, PartnerClient, Result
from streams.runtime.senderpool import LaneBase, Make, PoolBase, Work

if TYPE_CHECKING:
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")


class Lane(LaneBase):
    """One destination's senders (what a piece goes through; the rest: `LaneBase`)."""

    def submit(self, key: Hashable, make: Make) -> Work:
        work = Work()
        queue = self.queues.get(key)
        if queue is None:
            self.queues[key] = queue = deque()
            self.ready.append(key)
            self._wake()
        queue.append((work, make))
        self.pool.counts[key] += 1
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

    async def _serve(self) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        loop = asyncio.get_running_loop()
        ready, queues, running, pool = self.ready, self.queues, self.running, self.pool
        counts = pool.counts
        while True:
            if not ready:
                waiter = loop.create_future()
                self.idle.append(waiter)
                await waiter  # `stop` cancels it
                continue
            key = ready.popleft()
            queue = queues[key]
            if self.hold is not None and (self.holding is None or self.holding or self.released) and self._held(key):
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
            left = counts[key] - 1  # counted out (`counts`)
            if left > 0:
                counts[key] = left
            else:
                del counts[key]
            if queue:
                ready.append(key)  # to the tail: round robin across keys
            else:
                del queues[key]
            if key in pool.watch and pool.ended is not None:
                try:
                    pool.ended(key)  # the spill's refill: it reads the spill table
                except Exception:  # one pair's refill must not end the sender of every user
                    log.exception("a sender could not refill a user's spilled deliveries; it serves on")

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
        if self.interrupted:
            self._resumed(sender)  # if it swallowed its cancellation
        if not work.done():
            work.set_result(result)


class Senders(PoolBase):
    """The pool: a `Lane` of at most `size` senders per destination."""

    def submit(self, key: tuple[str, str], make: Make) -> Work:
        return self._lane(key[1]).submit(key, make)

    def submit_all(self, pieces: Iterable[tuple[tuple[str, str], Make]]) -> list[Work]:
        """`submit` each `(key, make)` in the order given (each behind its key's earlier
        work): the futures, in that order. A step's deliveries come in one call
        (`streams.runtime.routing.Deliveries`)."""
        return [self._lane(key[1]).submit(key, make) for key, make in pieces]

    def _lane(self, destination: str) -> Lane:
        lane = self._lanes.get(destination)
        if lane is None:
            self._lanes[destination] = lane = Lane(self)
        return lane


# ---------------------------------------------------------------- one delivery


async def deliver(rt: Runtime, key: str, item: Dispatch, parks: int | None = None) -> Result | None:
    """One delivery, the piece a dispatch submits: parked if it must not go now,
    else sent; parked, dead-lettered or done as its answer says. `parks`: the count
    of parks applied in this process (`ParkingMarks.parks`) when the user had no
    parked delivery for the partner, at its dispatch; unchanged, none can be parked
    now (a park record is the only way into a parked queue: `retries.apply_park`),
    and the pending row is not read again."""
    rt.observer.delivering(item.message_id)
    client = rt.clients[item.destination]
    if rt.parking.catchup.awaited and rt.parking.catching_up(key, item.destination):
        # This worker has not yet read all that an earlier owner left in the partition, and
        # a park or pending-done record of this user and partner may lie ahead of it
        # (streams.runtime.catchup). The senders held this delivery aside for it, at most
        # the delivery deadline and not under back-pressure (`Parking.hold`): it still
        # may, so it parks (its record behind every earlier one in the log).
        rt.counters[f"parked_catching_up.{item.destination}"] += 1
        error = "read before its partition caught up with an earlier owner's records; not called"
        await effects.park(rt, key, item, attempts=0, error=error, retry_after=None)
        return None
    if item.released_seq is not None and not _releasing(rt, key, item):
        # Confirmed, parked or handed over meanwhile (an earlier owner's record, a merge).
        rt.sending.in_flight.discard((key, item.destination, item.released_seq))
        return None
    marks = rt.parking.marks
    if marks.parking[(key, item.destination)] > 0 or (
        parks != marks.parks and rt.rows.pending(key).queue(item.destination).parked
    ):
        # An earlier delivery of this user to this partner is parked, or on its way to
        # be: park this one behind it rather than overtake it.
        await effects.park(rt, key, item, attempts=0, error="waiting behind a parked delivery", retry_after=None)
        return None
    breaker = rt.sending.breakers[item.destination]
    if not breaker.allow(rt.clock()):
        # The destination is backed off as a whole (streams.core.breaker): park at once,
        # due when the breaker lets a request through again, without asking it.
        rt.counters[f"held_back.{item.destination}"] += 1
        error = f"{client.name}: circuit {breaker.state} after {breaker.last_reason}; not called"
        await effects.park(rt, key, item, attempts=0, error=error, retry_after=breaker.wait(rt.clock()) or None)
        return None
    result = await send_bounded(rt, item.destination, item.request)
    rt.counters[f"{result.outcome.value}.{item.destination}"] += 1
    rt.observer.delivery(key, item.destination, item.message_id, result.outcome, result.status, rt.clock())
    if result.outcome is Outcome.RETRY or result.status in AUTH_STATUSES:
        # A 401/403 parks too: most likely the destination refuses the key for every
        # request (its breaker pauses it); a retry refused again after other requests
        # succeeded is this call's own refusal (streams.runtime.retries.retry).
        retry_after = max(result.retry_after or 0.0, breaker.wait(rt.clock())) or None
        error = error_text(client, result)
        await effects.park(rt, key, item, attempts=result.attempts, error=error, retry_after=retry_after)
        return result
    if result.outcome is Outcome.FAIL:
        await effects.dead_letter(
            rt,
            DeadLetter(
                Reason.PARTNER_REFUSED if client.classify(result.status) is Outcome.FAIL else Reason.RETRIES_EXHAUSTED,
                error_text(client, result),
                item.raw,
                item.source,
                "delivery",
                item.destination,
                _numbered(item),
            ),
            key.encode("utf-8"),
            status=result.status,
        )
    if item.released_seq is not None:
        # Confirm in the user's own partition, so the changelog write is local to the key.
        await effects.control_to_user(rt, key, PendingDone(item.destination, item.released_seq))
    return result


def _numbered(item: Dispatch) -> str | None:
    number = item.released_seq if item.released_seq is not None else item.seq
    return None if number is None else f"{item.destination}#{number}"


def _releasing(rt: Runtime, key: str, item: Dispatch) -> bool:
    return any(i.seq == item.released_seq for i in rt.rows.pending(key).queue(item.destination).releasing)


async def send_bounded(rt: Runtime, destination: str, request: PartnerRequest) -> Result:
    """`PartnerClient.send` within `CS_RELAY_DELIVERY_DEADLINE`, its answers told to
    the destination's breaker: a delivery never holds its event longer than that
    (a second to spare for the client's own budget), whatever the partner does. The
    breaker is told by `Answers` (streams.runtime.delivery), which the client calls
    within its own module."""
    deadline = rt.settings.delivery_deadline
    answers = rt.sending.answers.get(destination)
    if answers is None:
        answers = rt.sending.answers[destination] = Answers(destination, rt.sending.breakers, rt.clock, rt.counters)
    try:
        # asyncio.timeout, not wait_for: no task of its own per request (Python 3.11).
        async with asyncio.timeout(deadline + 1.0):
            return await rt.clients[destination].send(request, budget=deadline, on_answer=answers)
    except TimeoutError:
        answers(Outcome.RETRY, None, None)
        return Result(Outcome.RETRY, None, 1, f"no answer within {deadline:g} s", deadline)


def error_text(client: PartnerClient, result: Result) -> str:
    if result.status is not None:
        return f"{client.name} answered {result.status}: {result.excerpt}"
    return f"{client.name}: {result.excerpt}"
