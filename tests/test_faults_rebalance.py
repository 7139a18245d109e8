"""Fault suite, a rebalance while a partner is failing (issue 22, findings 2 and 3):
ClientSuccess answers 500 to everything, so every delivery to it parks; meanwhile a
second worker joins and later leaves, and tracks keep coming. Parks are under way at
each hand-over (a park cancelled by a revocation left a mark that held its user's
calls for good; a park record still ahead in the log let the new owner send a user's
next call first). Then ClientSuccess heals. Asserted: every track reached both
partners, each user's in the order sent, nothing dead-lettered, and no user has
anything left waiting. Real broker, real worker processes, the mock partners."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.figures import report
from tests.pipeline import Pipeline, Worker
from tests.test_e2e_admin import get_json
from tests.test_e2e_delivery import check_delivery, cs_events, csb_events, duplicates
from tests.test_faults_scale import all_delivered, wait_settled

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(600)]

USERS = 30
PARTITIONS = 4
FEED_PAUSE = 0.5  # seconds between two rounds of tracks


def tracks(round_: int, per_user: int) -> list[dict]:
    """Round `round_` of tracks, `per_user` for each user."""
    return [
        {"type": "track", "userId": f"r{u}", "event": f"r{u} e{round_}.{n}", "messageId": f"r{u}-{round_}-{n}"}
        for n in range(per_user)
        for u in range(USERS)
    ]


async def parked(worker: Worker) -> int:
    """ClientSuccess deliveries parked, or held behind parked ones, in the worker's partitions."""
    status, body = await get_json(worker, "/status")
    if status != 200:
        return 0
    cs = body["destinations"]["clientsuccess"]
    return cs["retrying"] + cs["held"]


async def waiting(worker: Worker, users: list[str]) -> dict[str, dict]:
    """The users that still have events held, releasing or parked (asked of one worker, which forwards)."""
    out = {}
    async with aiohttp.ClientSession() as session:
        for user in users:
            url = f"http://127.0.0.1:{worker.web_port}/pending/{user}"
            async with session.get(url) as response:
                status, body = response.status, await response.json()
            queues = (body.get("queues") or {}) if status == 200 else {"answer": {"status": status}}
            if any(q.get("held") or q.get("releasing") or q.get("parked") or q.get("status") for q in queues.values()):
                out[user] = queues
    return out


class Feeder:
    """A track per user every FEED_PAUSE seconds until stopped: calls, and so parks, are
    under way at every moment of the hand-overs."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.sent: list[dict] = []
        self.rounds = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            self.rounds += 1
            batch = tracks(self.rounds, 1)
            await self.pipeline.send(*batch)
            self.sent += batch
            try:
                await asyncio.wait_for(self.stop.wait(), FEED_PAUSE)
            except TimeoutError:
                pass


async def test_a_rebalance_while_a_partner_fails_leaves_no_user_held(pipeline: Pipeline):
    pipeline.partitions = PARTITIONS
    pipeline.env["CS_RELAY_SESSION_TIMEOUT"] = "6"
    first = pipeline.start_worker(index=0)
    users = [f"r{u}" for u in range(USERS)]
    setup = [
        {"type": "group", "userId": user, "groupId": f"org{u % 5}", "traits": {"name": f"Org {u % 5}"}}
        | {"messageId": f"{user}-g"}
        for u, user in enumerate(users)
    ]
    warm = tracks(0, 1)
    await pipeline.send(*setup, *warm)
    await all_delivered(pipeline, len(warm))

    await pipeline.fault("cs", status=500)
    feeder = Feeder(pipeline)
    feeding = asyncio.create_task(feeder.run())
    try:
        await pipeline.eventually(
            lambda: parked(first), lambda n: n >= USERS, what="deliveries parked at the first worker"
        )
        second = pipeline.start_worker(index=1)
        owners_two = await wait_settled(pipeline, [first, second], "two workers sharing the partitions")
        code = await asyncio.to_thread(second.terminate)
        owners_one = await wait_settled(pipeline, [first], "the first worker alone again")
    finally:
        feeder.stop.set()
        await feeding
    await pipeline.clear_faults("cs")
    sent = warm + feeder.sent

    cs, csb = await all_delivered(pipeline, len(sent))
    cs_counts = check_delivery(cs_events(cs), sent)
    csb_counts = check_delivery(csb_events(csb), sent)
    left = await pipeline.eventually(
        lambda: waiting(first, users), lambda w: not w, what="no user left waiting", timeout=120
    )
    dead = await pipeline.dead_letters()
    report(
        "rebalance while a partner fails",
        users=USERS,
        tracks=len(sent),
        assignment_two=owners_two,
        assignment_one=owners_one,
        second_worker_exit=code,
        cs_duplicates=duplicates(cs_counts),
        csb_duplicates=duplicates(csb_counts),
        users_waiting=len(left),
        dead_lettered=len(dead),
    )
    assert code == 0, second.log_tail()
    assert dead == [], [h for _, h in dead[:3]]
    assert first.alive, first.log_tail()
