"""A batch's events registered at once (`AckTracker.add_batch`, what
`Acks.close_batch` does for the intake): each is acknowledged in offset order once its
own work and the batch's shared work (its changelog writes) are done, by one coroutine
per partition that waits for its head event's work (no callback per piece of work); the
shared work is looked at once for the batch; if it fails, no event of the batch is
acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from streams.core.incoming import Incoming
from streams.runtime import intake
from streams.runtime.acks import Acks, AckTracker, Redeliveries


async def until(condition: Callable[[], bool], turns: int = 100) -> bool:
    """Whether `condition` holds within `turns` turns of the loop (no clock involved)."""
    for _ in range(turns):
        if condition():
            return True
        await asyncio.sleep(0)
    return condition()


def watchers(future: asyncio.Future[Any]) -> int:
    """The callbacks waiting on `future` (asyncio's own record of them)."""
    return len(future._callbacks or ())  # type: ignore[attr-defined]


def _futures(n: int) -> list[asyncio.Future[None]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(n)]


async def test_a_batch_is_acknowledged_in_order_once_its_own_and_its_shared_work_are_done():
    acks = AckTracker()
    acked: list[int] = []
    own = _futures(3)
    shared = asyncio.get_running_loop().create_future()
    events = [("tp", (lambda n=n: acked.append(n)), [own[n]], 10) for n in range(3)]
    events.append(("tp", lambda: acked.append(3), [], 10))  # no work of its own: the shared only
    acks.add_batch(events, [shared])
    assert acks.in_flight == 4 and acks.in_bytes == 40
    assert await until(lambda: watchers(own[0]) == 1)  # the head's, waited for
    assert not any(watchers(f) for f in (*own[1:], shared))  # nothing else watched
    for future in reversed(own):
        future.set_result(None)
    assert await until(lambda: watchers(shared) == 1)
    assert acked == []  # their own work is done, the batch's changelog writes are not
    shared.set_result(None)
    assert await until(lambda: acked == [0, 1, 2, 3])
    assert acks.in_flight == 0 and acks.in_bytes == 0


async def test_an_event_waits_for_its_own_work_after_the_shared_work():
    acks = AckTracker()
    acked: list[int] = []
    own = _futures(2)
    shared = asyncio.get_running_loop().create_future()
    acks.add_batch([("tp", (lambda n=n: acked.append(n)), [own[n]], 0) for n in range(2)], [shared])
    shared.set_result(None)
    own[1].set_result(None)
    assert await until(lambda: watchers(own[0]) == 1)
    assert acked == []  # the second is done, but behind the first
    own[0].set_result(None)
    assert await until(lambda: acked == [0, 1])


async def test_a_failed_shared_write_leaves_every_event_of_the_batch_unacknowledged():
    failures: list[object] = []
    acks = AckTracker(on_failure=lambda tp, exc: failures.append(tp))
    acked: list[int] = []
    shared = asyncio.get_running_loop().create_future()
    acks.add_batch([("tp", (lambda n=n: acked.append(n)), [], 0) for n in range(2)], [shared])
    later = asyncio.get_running_loop().create_future()
    acks.add("tp", lambda: acked.append(9), [later])
    shared.set_exception(RuntimeError("the producer refused it"))
    later.set_result(None)
    assert await until(lambda: failures == ["tp"])  # told once, as the partition's head failed
    for _ in range(5):
        await asyncio.sleep(0)
    assert acked == [] and failures == ["tp"] and acks.in_flight == 3
    acks.add("tp", lambda: acked.append(10))  # done at once, but behind the failed ones
    assert acked == [] and acks.in_flight == 4


async def test_a_batch_without_shared_work_is_acknowledged_as_its_own_work_ends():
    acks = AckTracker()
    acked: list[int] = []
    acks.add_batch([("a", lambda: acked.append(0), [], 0), ("b", lambda: acked.append(1), [], 0)])
    assert acked == [0, 1] and acks.in_flight == 0


def test_a_batch_s_redeliveries_are_found_by_reading_how_far_each_partition_was_handled():
    guard = Redeliveries()
    first = [_taken("t", 0, 0), _taken("t", 0, 1), _taken("t", 1, 0)]
    assert intake.first_times(first, guard.handled_to) == first
    guard.handled({("t", 0): 2, ("t", 1): 1})  # registered: read to
    # fetched again before Faust's seek, beside new ones and another partition's; twice in one batch
    again = [_taken("t", 0, 1), _taken("t", 0, 2), _taken("t", 0, 2), _taken("t", 1, 0), _taken("t", 1, 1)]
    assert intake.first_times(again, guard.handled_to) == [again[1], again[4]]
    guard.forget([("t", 0)])
    assert intake.first_times(again[:1], guard.handled_to) == again[:1]  # assigned again: from the committed offset


def _taken(topic: str, partition: int, offset: int) -> tuple[object, Incoming]:
    return object(), Incoming(b"u", b"{}", {}, topic, partition, offset)


async def test_full_says_when_the_reading_loops_must_wait_and_room_waits_until_not():
    acks = Acks(max_events=2, max_bytes=1_000)
    works = _futures(3)
    acks.add("tp", lambda: None, [works[0]], size=10)
    assert not acks.full
    acks.add("tp", lambda: None, [works[1]], size=10)
    assert acks.full  # two events: the count bound
    waiter = asyncio.ensure_future(acks.room())
    await asyncio.sleep(0)
    assert not waiter.done() and acks.pressed.is_set()
    works[0].set_result(None)
    await asyncio.wait_for(waiter, 5.0)
    assert not acks.full and not acks.pressed.is_set()
    acks.add("other", lambda: None, [works[2]], size=2_000)
    assert acks.full  # the byte bound
    acks.revoked(["other"])
    assert not acks.full  # forgotten events hold nothing


async def test_a_batch_s_events_wait_for_the_writes_made_while_it_was_handled_and_only_those():
    # What the intake does per batch (streams.runtime.intake.handle): the writes collected
    # in `changelog.collecting` (set, then set back), and one call in, `close_batch`.
    acks = Acks()
    table = Table()
    acks.changelog.watch(table)
    acked: list[int] = []
    table.send_changelog("before")  # outside any batch: not collected
    writes: list[Any] = []
    outer, acks.changelog.collecting = acks.changelog.collecting, writes
    table.send_changelog("a")
    with acks.changelog as inner:  # a block inside a batch collects its own
        table.send_changelog("packed")
    table.send_changelog("b")
    acks.changelog.collecting = outer
    acks.close_batch([("tp", lambda: acked.append(0), [], 10)], writes, {"tp": 42})
    table.send_changelog("after")  # the batch closed: not collected
    assert [w.key for w in writes] == ["a", "b"] and [w.key for w in inner] == ["packed"]  # type: ignore[attr-defined]
    assert acks.redeliveries.read_to("tp") == 42
    table.sent["a"].set_result(None)
    await asyncio.sleep(0)
    assert acked == []
    table.sent["b"].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert acked == [0] and acks.in_flight == 0


async def test_a_batch_handled_inside_a_changelog_block_waits_for_its_own_writes_and_the_block_goes_on():
    # Nothing in the worker nests a batch in a block (nor a batch in a batch), but
    # `intake.handle` sets back what was collecting before it.
    acks = Acks()
    table = Table()
    acks.changelog.watch(table)
    rt = SimpleNamespace(acks=acks)
    acked: list[int] = []
    taken = [(Event(acked), Incoming(b"u", b"{}", {}, "t", 0, 7))]
    with acks.changelog as outer:
        table.send_changelog("before")
        intake.handle(rt, taken, lambda record: (table.send_changelog("in"), [])[1])  # type: ignore[arg-type]
        table.send_changelog("after")
    assert [w.key for w in outer] == ["before", "after"]  # type: ignore[attr-defined]
    assert acks.changelog.collecting is None and acks.redeliveries.read_to(("t", 0)) == 8
    table.sent["before"].set_result(None)
    table.sent["after"].set_result(None)
    await asyncio.sleep(0)
    assert acked == []  # the batch waits for its own write alone
    table.sent["in"].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert acked == [7]


class Event:
    """What the intake keeps of a Faust event: its ack (and a weak reference to it)."""

    def __init__(self, acked: list[int]) -> None:
        self.acked = acked

    def ack(self) -> None:
        self.acked.append(7)


class Table:
    """A Faust table's `send_changelog`: a future per write, Kafka's acknowledgement."""

    def __init__(self) -> None:
        self.sent: dict[str, asyncio.Future[None]] = {}

    def send_changelog(self, key: str) -> asyncio.Future[None]:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.key = key  # type: ignore[attr-defined]
        self.sent[key] = written
        return written


async def test_a_revoked_partition_s_coroutine_ends_without_touching_the_work_it_waited_for():
    # The acknowledging coroutine waits on a future of its own: cancelling it (the
    # partition forgotten, the worker stopping) never cancels a delivery or a write.
    acks = AckTracker()
    work = _futures(2)
    acked: list[str] = []
    acks.add("revoked", lambda: acked.append("revoked"), [work[0]])
    acks.add("kept", lambda: acked.append("kept"), [work[1]])
    assert await until(lambda: watchers(work[0]) == 1 and watchers(work[1]) == 1)
    acks.forget(["revoked"])
    assert await until(lambda: watchers(work[0]) == 0)
    assert not work[0].done() and acks.in_flight == 1
    acks.stop()
    assert await until(lambda: watchers(work[1]) == 0)
    assert not work[1].done()
    work[0].set_result(None)
    work[1].set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert acked == []  # forgotten, and stopped: nothing more is acknowledged
    # Forgotten in the turn its work ended (the work's callback on its way): it ends all the same.
    done = _futures(1)
    acks.add("again", lambda: acked.append("again"), done)
    assert await until(lambda: watchers(done[0]) == 1)
    done[0].set_result(None)
    acks.forget(["again"])
    for _ in range(5):
        await asyncio.sleep(0)
    assert acked == [] and acks.in_flight == 1


async def test_work_whose_result_is_a_future_is_done_once_that_one_is():
    # A packed dedupe row's: its future is settled with the row's changelog write once
    # the row is written, after the batches that joined it closed.
    acks = AckTracker()
    acked: list[int] = []
    row, write = _futures(2)
    acks.add("tp", lambda: acked.append(0), [row])
    row.set_result(write)
    assert await until(lambda: watchers(write) == 1)
    assert acked == []
    write.set_result(None)
    assert await until(lambda: acked == [0])
    failed = _futures(2)
    failures: list[object] = []
    acks.on_failure = lambda tp, exc: failures.append(exc)
    acks.add("tp", lambda: acked.append(1), [failed[0]])
    failed[0].set_result(failed[1])
    failed[1].set_exception(RuntimeError("the producer refused the row"))
    assert await until(lambda: len(failures) == 1)
    assert acked == [0] and acks.in_flight == 1


async def test_a_partition_whose_coroutine_was_cancelled_by_another_gets_a_new_one():
    # Only `forget` and `stop` end a partition's coroutine on purpose; one cancelled by
    # anything else (a task sweep) must not leave the partition's events unacknowledged.
    acks = AckTracker()
    acked: list[int] = []
    work = _futures(1)
    acks.add("tp", lambda: acked.append(0), work)
    assert await until(lambda: watchers(work[0]) == 1)
    acks._partitions["tp"].acker.cancel()  # type: ignore[union-attr]
    assert await until(lambda: watchers(work[0]) == 0)
    later = _futures(1)
    acks.add("tp", lambda: acked.append(1), later)
    work[0].set_result(None)
    later[0].set_result(None)
    assert await until(lambda: acked == [0, 1])
