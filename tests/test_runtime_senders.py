"""The senders pool (streams.runtime.senders): per-user order, round robin across users,
a fixed number of senders per destination, cancellation of a revoked partition's work."""

from __future__ import annotations

import asyncio
import weakref

import faust
import pytest
from faust.streams import _current_event

from streams.runtime.senders import Senders
from tests.runtime_world import PARTITIONS, World
from tests.test_runtime_catchup import listed, parked
from tests.test_runtime_catchup import token as caught_up


async def test_work_runs_in_order_per_key_and_concurrently_across_keys():
    order = []
    senders = Senders(4)
    release_a = asyncio.Event()

    async def job(name, gate=None):
        if gate:
            await gate.wait()
        order.append(name)
        return name

    a1 = senders.submit(("a", "cs"), lambda: job("a1", release_a))
    a2 = senders.submit(("a", "cs"), lambda: job("a2"))
    b1 = senders.submit(("b", "cs"), lambda: job("b1"))
    assert await asyncio.wait_for(b1, 2) == "b1"
    assert order == ["b1"] and not a2.done()  # a2 waits behind a1, though senders are free
    release_a.set()
    assert await asyncio.wait_for(asyncio.gather(a1, a2), 2) == ["a1", "a2"]
    assert order == ["b1", "a1", "a2"]
    assert len(senders) == 0


async def test_a_sender_does_not_run_with_the_current_event_of_the_handling_that_started_it():
    # Faust's tables read and write the partition of the current event (a context
    # variable): a sender that kept the one being handled when it started would read
    # every later user's rows from that event's partition.
    class Event:
        pass

    handled = Event()
    _current_event.set(weakref.ref(handled))  # as Faust's stream does when it hands it out
    senders = Senders(2)

    async def current() -> object:
        return faust.current_event()

    assert await asyncio.wait_for(senders.submit(("a", "cs"), current), 2) is None
    assert faust.current_event() is handled  # the handling's own context keeps it


async def test_one_users_deep_queue_does_not_hold_the_others_round_robin():
    """One sender: a user with 5 queued pieces gets a turn, then each other user one."""
    senders = Senders(1)
    order = []

    async def job(name):
        order.append(name)
        await asyncio.sleep(0)

    work = [senders.submit(("heavy", "cs"), lambda i=i: job(f"h{i}")) for i in range(5)]
    work += [senders.submit((f"light{i}", "cs"), lambda i=i: job(f"l{i}")) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*work), 2)
    assert order == ["h0", "l0", "l1", "l2", "h1", "h2", "h3", "h4"]


async def test_at_most_size_pieces_run_per_destination_and_no_task_per_piece():
    senders = Senders(3)
    gate = asyncio.Event()
    running = {"cs": 0, "csb": 0}
    peak = {"cs": 0, "csb": 0}

    async def job(dest):
        running[dest] += 1
        peak[dest] = max(peak[dest], running[dest])
        await gate.wait()
        running[dest] -= 1

    tasks_before = len(asyncio.all_tasks())
    work = [senders.submit((f"u{i}", dest), lambda d=dest: job(d)) for i in range(50) for dest in ("cs", "csb")]
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == {"cs": 3, "csb": 3}  # each destination its own senders
    assert len(asyncio.all_tasks()) - tasks_before == 6  # 100 pieces queued: the senders' tasks only
    gate.set()
    await asyncio.wait_for(asyncio.gather(*work), 2)
    assert peak == {"cs": 3, "csb": 3} and senders.senders() == 6
    assert await senders.stop(2) and senders.senders() == 0


async def test_a_piece_that_fails_or_is_cancelled_alone_leaves_its_sender_serving():
    senders = Senders(1)  # one sender: it must survive both
    order = []

    async def fail():
        raise RuntimeError("refused")

    async def job(name):
        order.append(name)
        return name

    failing = senders.submit(("k", "cs"), fail)
    after_failure = senders.submit(("k", "cs"), lambda: job("after failure"))
    other = senders.submit(("other", "cs"), lambda: job("other"))
    with pytest.raises(RuntimeError, match="refused"):
        await asyncio.wait_for(failing, 2)
    assert await asyncio.wait_for(after_failure, 2) == "after failure"
    assert await asyncio.wait_for(other, 2) == "other"

    stuck = senders.submit(("k", "cs"), asyncio.Event().wait)  # never set: runs until cancelled
    after_cancel = senders.submit(("k", "cs"), lambda: job("after cancel"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not stuck.done()
    stuck.cancel()  # that one alone, as a revoked partition's delivery would be
    assert await asyncio.wait_for(after_cancel, 2) == "after cancel"
    assert stuck.cancelled()
    assert order == ["other", "after failure", "after cancel"]  # round robin: k had its turn
    assert senders.senders() == 1  # the same sender served it all


async def test_a_piece_cancelled_while_queued_never_runs():
    senders = Senders(1)
    gate = asyncio.Event()
    ran = []

    async def job(name):
        await gate.wait()
        ran.append(name)

    first = senders.submit(("k", "cs"), lambda: job("first"))
    queued = senders.submit(("k", "cs"), lambda: job("queued"))
    last = senders.submit(("k", "cs"), lambda: job("last"))
    queued.cancel()
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, last), 2)
    assert ran == ["first", "last"]


async def test_cancel_stops_running_and_queued_work_of_matching_keys_only():
    order = []
    senders = Senders(4)
    never, later = asyncio.Event(), asyncio.Event()

    async def job(name, gate):
        await gate.wait()
        order.append(name)

    a1 = senders.submit(("a", "cs"), lambda: job("a1", never))
    a2 = senders.submit(("a", "cs"), lambda: job("a2", later))
    b1 = senders.submit(("b", "cs"), lambda: job("b1", later))
    a3 = senders.submit(("a", "csb"), lambda: job("a3", later))  # another destination's lane
    await asyncio.sleep(0)
    assert await senders.cancel(lambda key: key[0] == "a", timeout=2)
    assert a1.cancelled() and a2.cancelled() and a3.cancelled() and not b1.done()
    later.set()
    await asyncio.wait_for(b1, 2)
    assert order == ["b1"]  # a2 never ran, though its gate opened
    assert len(senders) == 0
    again = senders.submit(("a", "cs"), lambda: job("a again", later))  # the partition assigned again
    await asyncio.wait_for(again, 2)
    assert order == ["b1", "a again"]


async def test_cancel_waits_for_a_running_piece_that_ignores_it_and_drops_the_queued_ones():
    senders = Senders(2)
    started = asyncio.Event()
    finished = []
    ran = []

    async def stubborn():
        started.set()
        try:
            await asyncio.Event().wait()  # never set: until cancelled
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # winds down a while, then ends all the same
            finished.append("stubborn")
            return "finished anyway"

    async def job():
        ran.append("queued work")

    senders.submit(("k", "cs"), stubborn)
    queued = senders.submit(("k", "cs"), job)
    await started.wait()
    assert await senders.cancel(lambda key: key == ("k", "cs"), timeout=2)
    assert finished == ["stubborn"]  # waited for, not just told
    assert queued.cancelled() and ran == []
    served = senders.submit(("other", "cs"), job)  # its sender serves on
    await asyncio.wait_for(served, 2)
    assert ran == ["queued work"]


async def test_cancel_says_so_when_a_running_piece_does_not_stop_in_time():
    senders = Senders(1)
    started, deaf_until = asyncio.Event(), asyncio.Event()

    async def deaf():
        started.set()
        while not deaf_until.is_set():
            try:
                await deaf_until.wait()
            except asyncio.CancelledError:
                continue

    work = senders.submit(("k", "cs"), deaf)
    await started.wait()
    assert not await senders.cancel(lambda key: True, timeout=0.05)
    deaf_until.set()  # it ends at last: the sender serves on
    assert await senders.cancel(lambda key: True, timeout=2)
    assert work.cancelled()
    assert await asyncio.wait_for(senders.submit(("k", "cs"), lambda: asyncio.sleep(0, "next")), 2) == "next"


async def test_stop_cancels_everything_and_ends_the_senders():
    senders = Senders(2)
    never = asyncio.Event()
    running = senders.submit(("a", "cs"), never.wait)
    queued = senders.submit(("a", "cs"), never.wait)
    idle_lane = senders.submit(("b", "forward"), lambda: asyncio.sleep(0))
    await asyncio.wait_for(idle_lane, 2)
    assert senders.senders() == 2
    assert await senders.stop(2)
    assert running.cancelled() and queued.cancelled()
    assert senders.senders() == 0 and len(senders) == 0


async def test_a_held_key_waits_without_a_sender_and_then_runs_in_order():
    """A partition that has not caught up holds its users' work (the hook `hold`): with
    one sender, the others' work goes on meanwhile; the held user's runs in order after."""
    caught_up = asyncio.Event()
    behind = {"held"}

    def hold(key):
        return caught_up.wait() if key[0] in behind else None

    senders = Senders(1, hold=hold)
    order = []

    async def job(name):
        order.append(name)

    held = [senders.submit(("held", "cs"), lambda i=i: job(f"held{i}")) for i in range(3)]
    other = [senders.submit((f"u{i}", "cs"), lambda i=i: job(f"u{i}")) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*other), 2)
    assert order == ["u0", "u1", "u2"] and not any(w.done() for w in held)
    behind.clear()
    caught_up.set()
    await asyncio.wait_for(asyncio.gather(*held), 2)
    assert order == ["u0", "u1", "u2", "held0", "held1", "held2"]


async def test_a_held_piece_runs_once_its_hold_ends_whatever_the_outcome():
    """The hold timed out (the partition still behind): the piece runs, and decides (it parks)."""

    async def gives_up():
        await asyncio.sleep(0)
        return False

    senders = Senders(1, hold=lambda key: gives_up())
    assert await asyncio.wait_for(senders.submit(("k", "cs"), lambda: asyncio.sleep(0, "ran")), 2) == "ran"


async def test_cancel_drops_a_held_keys_work_and_its_hold():
    never = asyncio.Event()
    senders = Senders(1, hold=lambda key: never.wait() if key[0] == "held" else None)
    ran = []

    async def job(name):
        ran.append(name)

    held = senders.submit(("held", "cs"), lambda: job("held"))
    await asyncio.wait_for(senders.submit(("other", "cs"), lambda: job("other")), 2)
    assert await senders.cancel(lambda key: key[0] == "held", timeout=2)
    assert held.cancelled() and len(senders) == 0
    never.set()
    await asyncio.sleep(0)
    assert ran == ["other"]
    assert await senders.stop(2)


async def test_the_hold_is_asked_only_while_its_gate_is_not_empty():
    """`holding` (the catch-up's awaited partitions in the worker): empty, a piece goes
    without asking `hold` (a read, not a call); not empty, `hold` is asked again."""
    asked = []
    caught_up = asyncio.Event()
    holding: set[int] = set()

    def hold(key):
        asked.append(key[0])
        return caught_up.wait() if key[0] == "late" else None

    senders = Senders(1, hold=hold, holding=holding)
    assert await asyncio.wait_for(senders.submit(("a", "cs"), lambda: asyncio.sleep(0, "a")), 2) == "a"
    assert asked == []
    holding.add(3)
    late = senders.submit(("late", "cs"), lambda: asyncio.sleep(0, "late"))
    assert await asyncio.wait_for(senders.submit(("b", "cs"), lambda: asyncio.sleep(0, "b")), 2) == "b"
    assert asked == ["late", "b"] and not late.done()
    holding.clear()
    caught_up.set()
    assert await asyncio.wait_for(late, 2) == "late"  # released: runs, not asked again
    assert asked == ["late", "b"]
    assert await senders.stop(2)


async def test_the_lanes_count_each_keys_work_and_tell_when_a_watched_keys_piece_ends():
    """`counts`: the pieces queued or running per key (the share's measure), down as
    each ends, is cancelled while queued or is dropped by `cancel`; `ended(key)` told
    after each piece of a key in `watch`, with the count already down."""
    senders = Senders(1)
    gate = asyncio.Event()
    told: list[tuple[str, int]] = []
    senders.watch = {("w", "cs")}
    senders.ended = lambda key: told.append((key[0], senders.counts[key]))

    works = [senders.submit(("w", "cs"), gate.wait) for _ in range(3)]
    other = senders.submit(("o", "cs"), gate.wait)
    dropped = senders.submit(("x", "cs"), gate.wait)
    assert senders.counts == {("w", "cs"): 3, ("o", "cs"): 1, ("x", "cs"): 1}
    works[1].cancel()  # queued: counted out when the lane reaches it
    assert await senders.cancel(lambda key: key[0] == "x", timeout=2)
    assert dropped.cancelled() and ("x", "cs") not in senders.counts
    gate.set()
    await asyncio.wait_for(asyncio.gather(works[0], works[2], other), 2)
    assert senders.counts == {}
    assert told == [("w", 2), ("w", 1), ("w", 0)]  # not told of ("o", "cs")
    assert await senders.stop(2)


async def test_a_failing_ended_callback_is_logged_and_the_sender_serves_on(caplog):
    """`ended` (the spill's refill, which reads the spill table) may fail; the one sender
    (CS_RELAY_MAX_IN_FLIGHT=1) must log it and go on serving every other user, not end."""
    senders = Senders(1)
    senders.watch = {("w", "cs")}

    def ended(key: object) -> None:
        raise RuntimeError("the spill table could not be read")

    senders.ended = ended
    assert await asyncio.wait_for(senders.submit(("w", "cs"), lambda: asyncio.sleep(0, "w")), 2) == "w"
    assert await asyncio.wait_for(senders.submit(("o", "cs"), lambda: asyncio.sleep(0, "o")), 2) == "o"
    assert "the spill table could not be read" in caplog.text
    assert await senders.stop(2)


def users_asked(world: World) -> list[str]:
    return [r.json["identity"]["user"]["id"] for r in world.client.requests if "/events/" in r.path]


async def test_a_partition_behind_an_earlier_owner_holds_its_deliveries_but_no_sender():
    """One sender (CS_RELAY_MAX_IN_FLIGHT=1): a user of a partition that has not read back
    its caught-up record, and that the read-ahead did not answer for (no scan here: as
    when it fell back), waits for the record, while a user of another partition is delivered."""
    world = World({"CS_RELAY_MAX_IN_FLIGHT": "1"})
    rt = world.rt
    late = "late-user"
    other = next(f"user-{i}" for i in range(100) if rt.partition_of(f"user-{i}") != rt.partition_of(late))
    for user in (late, other):
        await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")
    assert await world.settle()
    rt.assigned(set(range(PARTITIONS)))
    assert await world.settle()  # every partition's caught-up record read back
    token = rt.parking.catchup.begin([rt.partition_of(late)])[rt.partition_of(late)]  # then the late one reassigned
    await world.publish(type="track", userId=late, event="Late", messageId="late-1")
    await world.publish(type="track", userId=other, event="Other", messageId="other-1")
    await world.settle(spins=20)
    assert users_asked(world) == [other]  # the late user's delivery did not take the only sender
    assert rt.parking.catchup.reached(rt.partition_of(late), token)
    assert await world.settle()
    assert users_asked(world) == [other, late]
    assert not rt.counters["parked_catching_up.clientsuccess"]


async def test_only_a_pair_the_read_ahead_noted_is_held_aside_the_others_of_its_partition_go():
    """One sender, a partition behind its caught-up record whose read-ahead found a park
    record of one user (streams.runtime.catchup): that user's delivery is held aside until
    the record is read, without the sender; another user of the same partition is
    delivered at once, before the partition has caught up."""
    world = World({"CS_RELAY_MAX_IN_FLIGHT": "1"})
    rt = world.rt
    late = "late-user"
    partition = rt.partition_of(late)
    neighbour = next(f"user-{i}" for i in range(1000) if rt.partition_of(f"user-{i}") == partition)
    for user in (late, neighbour):
        await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")
    assert await world.settle()
    rt.assigned(set(range(PARTITIONS)))
    assert await world.settle()  # every partition's caught-up record read back
    token = rt.parking.catchup.begin([partition])[partition]  # then the partition reassigned, read ahead:
    ahead = [parked(partition, late, "clientsuccess"), caught_up(partition, token)]
    rt.parking.catchup.scan_ahead({partition: token}, listed([ahead]))
    await world.publish(type="track", userId=late, event="Late", messageId="late-1")
    await world.publish(type="track", userId=neighbour, event="Neighbour", messageId="neighbour-1")
    await world.settle(spins=20)
    assert users_asked(world) == [neighbour]  # at once, its partition still behind
    assert rt.parking.catchup.behind(partition) and len(rt.sending.senders) == 1  # the late user's, held aside
    assert rt.parking.catchup.reached(partition, token)
    assert await world.settle()
    assert users_asked(world) == [neighbour, late]
    assert not rt.counters["parked_catching_up.clientsuccess"]
    await rt.parking.catchup.close()
