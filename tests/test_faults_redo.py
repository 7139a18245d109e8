"""Fault suite, redo (issue 16, items 1, 3 and 9): the worker killed with SIGKILL at
random moments during a run full of anonymous merges and held events, and a broker made
slow mid-run. Against the real broker, real worker processes and the mock partners
(`make faults`).

The traffic, per user: an anonymous visitor's page views (held: no group), the login
(an identify with both ids: the merge across two partitions), tracks made before the
user's group call (held), the group call (which releases them), and more tracks.
Asserted at ClientSuccess: every page view and track arrived, attributed to the user
(not the visitor), each user's in the order made; duplicates only from what was in
flight at a kill (at most the unacknowledged window each time); nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter, defaultdict

import pytest

from streams.localkafka import LocalKafka
from tests.figures import report
from tests.pipeline import Pipeline, open_pipeline

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

UNACKNOWLEDGED_WINDOW = 5000  # streams.runtime.acks.MAX_UNACKED_EVENTS


def merging_traffic(users: int, pages: int, early: int, tracks: int, prefix: str) -> tuple[list[dict], dict]:
    """The messages, and each user's ClientSuccess events in the order they must arrive."""
    out: list[dict] = []
    wanted: dict[str, list[str]] = {}
    for u in range(users):
        user, visitor = f"{prefix}{u}", f"{prefix}anon{u}"
        mine = wanted.setdefault(user, [])
        for n in range(pages):
            out.append({"type": "page", "anonymousId": visitor, "name": f"{user} p{n}", "messageId": f"{visitor}-p{n}"})
            mine.append(f"Viewed {user} p{n} Page")
        out.append(
            {
                "type": "identify",
                "userId": user,
                "anonymousId": visitor,
                "traits": {"email": f"{user}@example.com"},
                "messageId": f"{user}-login",
            }
        )
        for n in range(early):
            out.append({"type": "track", "userId": user, "event": f"{user} early{n}", "messageId": f"{user}-early{n}"})
            mine.append(f"{user} early{n}")
        out.append(
            {
                "type": "group",
                "userId": user,
                "groupId": f"{prefix}org{u % 7}",
                "traits": {"name": f"Org {u % 7}"},
                "messageId": f"{user}-group",
            }
        )
    for n in range(tracks):
        for u in range(users):
            user = f"{prefix}{u}"
            out.append({"type": "track", "userId": user, "event": f"{user} e{n}", "messageId": f"{user}-e{n}"})
            wanted[user].append(f"{user} e{n}")
    return out, wanted


def cs_arrivals(state: dict) -> list[tuple[str, str]]:
    events = sorted(
        (e for org in state["organizations"].values() for e in org["events"]), key=lambda e: e["received_at"]
    )
    return [(e["user_id"], e["event"]) for e in events]


def check(arrivals: list[tuple[str, str]], wanted: dict[str, list[str]]) -> int:
    """Every wanted event arrived, for its user, each user's first arrivals in order;
    returns the number of duplicates."""
    counts = Counter(event for _, event in arrivals)
    missing = [e for events in wanted.values() for e in events if counts[e] == 0]
    assert not missing, f"{len(missing)} events never arrived, e.g. {missing[:5]}"
    first: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for user, event in arrivals:
        if event not in seen:
            seen.add(event)
            first[user].append(event)
    for user, events in wanted.items():
        assert first[user] == events, f"{user}: {first[user][:8]} ... instead of {events[:8]} ..."
    return sum(n - 1 for n in counts.values() if n > 1)


def delivered(state: dict) -> int:
    return len({event for _, event in cs_arrivals(state)})


async def test_kill_9_at_random_moments_during_merges_and_held_events(pipeline: Pipeline):
    rng = random.Random(int(os.environ.get("CS_RELAY_FAULTS_SEED", "16")))
    sent, wanted = merging_traffic(users=200, pages=3, early=2, tracks=10, prefix="k9")
    total = sum(len(v) for v in wanted.values())  # 3,000 ClientSuccess events
    pipeline.partitions = 4
    pipeline.env["CS_RELAY_SESSION_TIMEOUT"] = "6"
    worker = pipeline.start_worker()
    sender = asyncio.create_task(send_in_batches(pipeline, sent, batch=100, pause=0.5))  # about 17 s
    kills: list[int] = []
    for _ in range(3):
        # kill a worker that is at work: some more delivered since the last restart
        floor = (kills[-1] if kills else 0) + 100
        await pipeline.eventually(pipeline.cs_state, lambda s, f=floor: delivered(s) >= f, what="progress", timeout=120)
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        kills.append(delivered(await pipeline.cs_state()))
        await asyncio.to_thread(worker.kill)
        worker = pipeline.start_worker()
    await sender
    state = await pipeline.eventually(
        pipeline.cs_state, lambda s: delivered(s) >= total, what=f"all {total} events at ClientSuccess", timeout=240
    )
    duplicated = check(cs_arrivals(state), wanted)
    dead = await pipeline.dead_letters()
    report(
        "kill -9 during merges",
        sent=len(sent),
        cs_events=total,
        delivered_at_each_kill=kills,
        duplicated=duplicated,
        dead_lettered=len(dead),
    )
    assert dead == [], [h for _, h in dead[:3]]
    assert duplicated <= UNACKNOWLEDGED_WINDOW * len(kills)
    assert worker.alive, worker.log_tail()


async def send_in_batches(pipeline: Pipeline, messages: list[dict], *, batch: int, pause: float) -> None:
    for start in range(0, len(messages), batch):
        await pipeline.send(*messages[start : start + batch])
        await asyncio.sleep(pause)


async def test_a_slow_broker_mid_run_loses_nothing(tmp_path):
    """The broker stalls (SIGSTOP) for 1.5 s of every 2 s, for 30 s, while calls keep
    coming: produce and commit latency as from a sick broker. Everything arrives, in order."""
    kafka = LocalKafka(port=0, data_dir=tmp_path / "kafka")
    kafka.start(timeout=120)
    pipe = await open_pipeline(kafka.bootstrap_servers, tmp_path)
    try:
        sent, wanted = merging_traffic(users=100, pages=2, early=1, tracks=10, prefix="sb")
        total = sum(len(v) for v in wanted.values())
        worker = pipe.start_worker()
        half = len(sent) // 2
        await pipe.send(*sent[:half])
        await pipe.eventually(pipe.cs_state, lambda s: delivered(s) >= 100, what="some deliveries")
        pid = kafka.pid
        assert pid is not None
        slow_started = time.monotonic()
        rest = asyncio.create_task(send_in_batches(pipe, sent[half:], batch=100, pause=1.0))
        stalls = 0
        while time.monotonic() - slow_started < 30:
            os.killpg(pid, signal.SIGSTOP)
            stalls += 1
            await asyncio.sleep(1.5)
            os.killpg(pid, signal.SIGCONT)
            await asyncio.sleep(0.5)
        await rest
        state = await pipe.eventually(
            pipe.cs_state,
            lambda s: delivered(s) >= total,
            what=f"all {total} events after the slow broker",
            timeout=180,
        )
        recovery = time.monotonic() - slow_started - 30
        duplicated = check(cs_arrivals(state), wanted)
        dead = await pipe.dead_letters()
        report(
            "slow broker",
            sent=len(sent),
            cs_events=total,
            stalls=stalls,
            duplicated=duplicated,
            dead_lettered=len(dead),
            caught_up_after_s=f"{recovery:.1f}",
            worker_alive=worker.alive,
        )
        assert dead == []
        assert worker.alive, worker.log_tail()
    finally:
        if kafka.pid is not None:
            os.killpg(kafka.pid, signal.SIGCONT)
        await pipe.close()
        kafka.stop()
