"""Fault suite, rate limit (issue 22, build item 5; finding 4): a delivery rate limit set
while a backlog drains. Against the real broker, real worker processes and the mock
partners (`make faults`; not part of `make test`).

CustomerSuccessBox answers 503 while each user makes tracks: a backlog of parked
deliveries builds up. The worker is then restarted with CS_RELAY_CSB_RATE_LIMIT set
(the partner still failing: the new worker's breaker opens again), and the partner
recovers: the whole backlog is due at once, far more requests than the limit lets go
within a delivery's budget (CS_RELAY_DELIVERY_DEADLINE, 10 s), while live tracks keep
coming. Asserted: the partner never sees more than the limit, and every track arrives,
each user's in order, nothing dead-lettered, well within the retry window.

The tolerance: the limiter is a token bucket holding one second's worth, so any W
seconds may see LIMIT * (W + 1) requests (a full bucket, then the rate); the mock stamps
a request when its handler runs, not when the worker took its turn: a request delayed
on its way (the worker's pool, the mock's loop, both sharing the machine with the
broker) lands in a later window, so up to half a second's worth more is allowed. The
drain must also go at the limit, not far below it (the limiter's queue is not the
partner's failure, and a waiter that gives up leaves its turn to the next): at least
half of it, over the whole drain, ticks and Kafka round trips included.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import Any

import pytest

from tests.figures import report
from tests.pipeline import Pipeline
from tests.test_e2e_admin import get_json, wait_ready
from tests.test_faults_isolation import check_arrivals, csb_arrivals, received_at, setup_calls

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

USERS = 120
TRACKS = 4  # per user while the partner fails: the backlog is USERS * TRACKS deliveries
LIVE_RATE = 3  # tracks per second while the backlog drains
LIVE_SECONDS = 15
LIMIT = 10  # CS_RELAY_CSB_RATE_LIMIT, requests per second
WINDOW = 600  # CS_RELAY_RETRY_WINDOW_SECONDS
CSB = "customersuccessbox"


def most_in(times: list[float], seconds: float) -> int:
    """The most of `times` (sorted) within any `seconds` (a window starting at one of them)."""
    return max((bisect_left(times, t + seconds) - i for i, t in enumerate(times)), default=0)


async def csb_status(worker: Any) -> dict[str, Any]:
    status, body = await get_json(worker, "/status")
    return body["destinations"][CSB] if status == 200 else {}


async def test_a_rate_limit_set_while_a_backlog_drains(pipeline: Pipeline):
    pipeline.partitions = 4
    env = {"CS_RELAY_RETRY_WINDOW_SECONDS": str(WINDOW)}
    first = pipeline.start_worker(**env)
    users = [f"rl{u}" for u in range(USERS)]
    sent: list[tuple[float, str, str]] = []  # (time, user, event), as check_arrivals wants them
    counts = dict.fromkeys(users, 0)

    def tracks(batch: list[str]) -> list[dict[str, Any]]:
        out = []
        for user in batch:
            event = f"{user} e{counts[user]}"
            out.append({"type": "track", "userId": user, "event": event, "messageId": f"{user}-{counts[user]}"})
            sent.append((time.time(), user, event))
            counts[user] += 1
        return out

    await pipeline.send(*setup_calls(users), *tracks(users))
    await pipeline.eventually(
        pipeline.csb_state, lambda s: len(s["events"]) >= USERS, what="the first tracks at CustomerSuccessBox"
    )

    # The outage: every user's tracks are parked.
    await pipeline.fault("csb", status=503)
    outage = time.time()
    for _ in range(TRACKS):
        await pipeline.send(*tracks(users))
    backlog = USERS * TRACKS
    await pipeline.eventually(
        lambda: csb_status(first),
        lambda s: s.get("retrying", 0) + s.get("pending", 0) >= backlog,  # parked, or held behind
        what=f"{backlog} deliveries to CustomerSuccessBox waiting",
        timeout=120,
    )

    # The limit is set: the worker restarts with it, the partner still failing.
    first.terminate()
    limited = pipeline.start_worker(CS_RELAY_CSB_RATE_LIMIT=str(LIMIT), **env)
    await wait_ready(pipeline, limited)
    limited_from = time.time()
    await pipeline.clear_faults("csb")
    recovered = time.time()

    async def live() -> None:
        for n in range(LIVE_RATE * LIVE_SECONDS):
            await pipeline.send(*tracks([users[n % USERS]]))
            await asyncio.sleep(max(0.0, recovered + (n + 1) / LIVE_RATE - time.time()))

    await live()
    total = len(sent)
    csb = await pipeline.eventually(
        pipeline.csb_state,
        lambda s: len({e for _, _, e in csb_arrivals(s)}) >= total,
        what=f"all {total} tracks at CustomerSuccessBox",
        timeout=(total + 2 * USERS) / LIMIT * 3 + 120,
    )
    assert limited.alive, limited.log_tail()
    arrivals = csb_arrivals(csb)
    duplicates = check_arrivals("CustomerSuccessBox", arrivals, sent)
    dead = await pipeline.dead_letters()
    assert dead == [], [h for _, h in dead[:3]]

    times = sorted(t for r in await pipeline.csb_requests() if (t := received_at(r["received_at"])) >= limited_from)
    drained = max(t for t, _, _ in arrivals)
    drain_rate = sum(1 for t in times if t >= recovered) / max(drained - recovered, 1e-9)
    peaks = {w: most_in(times, w) for w in (1, 5, 20)}
    report(
        "faults rate limit",
        limit=LIMIT,
        backlog=backlog,
        live=LIVE_RATE * LIVE_SECONDS,
        requests_limited=len(times),
        duplicated=duplicates,
        most_in_1s=peaks[1],
        most_in_5s=peaks[5],
        most_in_20s=peaks[20],
        drain_s=round(drained - recovered, 1),
        drain_rate=round(drain_rate, 1),
        outage_to_drained_s=round(drained - outage, 1),
    )
    for seconds, most in peaks.items():
        assert most <= LIMIT * (seconds + 1) + LIMIT // 2, (seconds, most, peaks)
    assert drain_rate >= LIMIT / 2, (drain_rate, drained - recovered)
    assert drained - outage < WINDOW / 2  # well within the retry window
