"""Fault suite, isolation (issue 16, items 5 and 9): CustomerSuccessBox sick under a
steady load, ClientSuccess unharmed. Against the real broker, a real worker process and
the mock partners (`make faults`; not part of `make test`).

Each scenario: users get a group and an identify, then a feeder produces tracks at a
fixed rate; after a quiet phase the CustomerSuccessBox mock is made sick (503, 429 with
Retry-After 600, 6 s of latency, or 401 as for a wrong key), then well again, and the
feeder goes on for a while. Asserted: ClientSuccess's delivered rate during the fault is
at least 90 % of its rate before; afterwards every track reached both partners, each
user's in order, nothing dead-lettered; CustomerSuccessBox's delivery rate while it
catches up is at least its normal rate. The figures go to tests/figures.py.

Durations: the 503 outage lasts the 2 minutes of the issue; the other faults last 60 s,
so that the suite stays within about 15 minutes. The 429 scenario runs the worker with
CS_RELAY_MAX_RETRY_AFTER=20 (honour at most 20 s of the partner's 600), or catching up
would take 10 minutes after the fault.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from tests.figures import report
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.faults, pytest.mark.isolation, pytest.mark.timeout(720)]

USERS = 300
# Tracks per second (CS_RELAY_FAULTS_RATE): a few hundred by default; lower it on a
# machine the worker shares with other work, where it cannot keep up with that at all.
RATE = int(os.environ.get("CS_RELAY_FAULTS_RATE", "200"))
BEFORE = 20.0  # seconds of steady load before the fault
AFTER = 30.0  # seconds of load after it
TICK = 0.1


def received_at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cs_arrivals(state: dict) -> list[tuple[float, str, str]]:
    """(received at, user, event) of every ClientSuccess event, in arrival order."""
    out = [
        (received_at(e["received_at"]), e["user_id"], e["event"])
        for org in state["organizations"].values()
        for e in org["events"]
    ]
    return sorted(out)


def csb_arrivals(state: dict) -> list[tuple[float, str, str]]:
    return sorted((received_at(e["received_at"]), e["userId"], e["event"]) for e in state["events"])


@dataclass
class Feeder:
    """Tracks at a fixed rate, round robin over the users; remembers when each went."""

    pipeline: Pipeline
    users: list[str]
    sent: list[tuple[float, str, str]] = field(default_factory=list)  # (time, user, event)
    _counts: Counter[str] = field(default_factory=Counter)

    async def run(self, seconds: float) -> None:
        per_tick = max(1, round(RATE * TICK))
        start = time.monotonic()
        ticks = 0
        i = len(self.sent)
        while time.monotonic() - start < seconds:
            batch = []
            now = time.time()
            for _ in range(per_tick):
                user = self.users[i % len(self.users)]
                n = self._counts[user]
                self._counts[user] += 1
                event = f"{user} e{n}"
                batch.append({"type": "track", "userId": user, "event": event, "messageId": f"{user}-{n}"})
                self.sent.append((now, user, event))
                i += 1
            await self.pipeline.send(*batch)
            ticks += 1
            await asyncio.sleep(max(0.0, start + ticks * TICK - time.monotonic()))


def rate(arrivals: list[tuple[float, str, str]], start: float, end: float) -> float:
    """Distinct events first received in [start, end), per second."""
    first: dict[str, float] = {}
    for t, _, event in arrivals:
        first.setdefault(event, t)
    return sum(1 for t in first.values() if start <= t < end) / max(end - start, 1e-9)


def check_arrivals(name: str, arrivals: list[tuple[float, str, str]], sent: list[tuple[float, str, str]]) -> int:
    """Every sent track arrived; each user's first arrivals in the order sent. Returns
    how many arrivals were duplicates."""
    counts = Counter(event for _, _, event in arrivals)
    missing = [e for _, _, e in sent if counts[e] == 0]
    assert not missing, f"{name}: {len(missing)} of {len(sent)} tracks never arrived, e.g. {missing[:5]}"
    wanted: dict[str, list[str]] = {}
    for _, user, event in sent:
        wanted.setdefault(user, []).append(event)
    got: dict[str, list[str]] = {}
    seen: set[str] = set()
    for _, user, event in arrivals:
        if event not in seen and event in counts:
            seen.add(event)
            got.setdefault(user, []).append(event)
    for user, events in wanted.items():
        mine = set(events)
        got_events = [e for e in got.get(user, []) if e in mine]
        assert got_events == events, f"{name}: order broken for {user}: {got_events[:10]} ..."
    return sum(n - 1 for n in counts.values() if n > 1)


def caught_up_at(arrivals: list[tuple[float, str, str]], sent: list[tuple[float, str, str]], after: float) -> float:
    """The first moment after `after` from which every track sent more than 2 s before
    it had arrived (the backlog is drained)."""
    first: dict[str, float] = {}
    for t, _, event in arrivals:
        first.setdefault(event, t)
    # latest arrival among the tracks sent up to each moment: the backlog is gone once
    # every track sent before t - 2 has arrived by t.
    latest = 0.0
    caught = after
    for t_sent, _, event in sorted(sent):
        latest = max(latest, first[event])
        if t_sent <= after:
            caught = max(caught, latest)
    return caught


def setup_calls(users: list[str]) -> list[dict]:
    """A group call (one of 7 groups) and an identify per user, before their tracks."""
    setup = []
    for u, user in enumerate(users):
        group = {"name": f"Org {u % 7}"}
        setup.append(
            {"type": "group", "userId": user, "groupId": f"org-{u % 7}", "traits": group, "messageId": f"{user}-g"}
        )
        setup.append(
            {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com"}, "messageId": f"{user}-i"}
        )
    return setup


async def scenario(
    pipeline: Pipeline,
    name: str,
    *,
    fault_seconds: float,
    make_sick: Callable[[], Awaitable[None]],
    worker_env: dict[str, str] | None = None,
) -> None:
    pipeline.partitions = 4
    worker = pipeline.start_worker(**(worker_env or {}))
    users = [f"{name[:3]}{u}" for u in range(USERS)]
    await pipeline.send(*setup_calls(users))
    feeder = Feeder(pipeline, users)
    await feeder.run(3.0)
    await pipeline.eventually(
        pipeline.csb_state, lambda s: len(s["events"]) >= len(feeder.sent), what="the worker to deliver", timeout=120
    )
    warm = len(feeder.sent)

    started = time.time()
    await feeder.run(BEFORE)
    fault_start = time.time()
    await make_sick()
    await feeder.run(fault_seconds)
    fault_end = time.time()
    await pipeline.clear_faults("csb")
    await feeder.run(AFTER)
    total = len(feeder.sent)

    cs = await pipeline.eventually(
        pipeline.cs_state,
        lambda s: len({e for _, _, e in cs_arrivals(s)}) >= total,
        what=f"all {total} tracks at ClientSuccess",
        timeout=240,
    )
    csb = await pipeline.eventually(
        pipeline.csb_state,
        lambda s: len({e for _, _, e in csb_arrivals(s)}) >= total,
        what=f"all {total} tracks at CustomerSuccessBox",
        timeout=300,
    )
    assert worker.alive, worker.log_tail()
    cs_in, csb_in = cs_arrivals(cs), csb_arrivals(csb)
    sent = feeder.sent[warm:]
    cs_dup = check_arrivals("ClientSuccess", cs_in, feeder.sent)
    csb_dup = check_arrivals("CustomerSuccessBox", csb_in, feeder.sent)
    dead = await pipeline.dead_letters()

    cs_before = rate(cs_in, started + 5, fault_start)
    cs_during = rate(cs_in, fault_start, fault_end)
    csb_before = rate(csb_in, started + 5, fault_start)
    backlog = sum(1 for t, _, e in sent if t < fault_end) - sum(
        1 for e, t in _first(csb_in).items() if t < fault_end and e in {x for _, _, x in sent}
    )
    caught = caught_up_at(csb_in, sent, fault_end)
    catch_up = max(caught - fault_end, 1e-9)
    csb_catching_up = rate(csb_in, fault_end, caught) if caught > fault_end else float("inf")
    report(
        f"faults {name}",
        sent=len(sent),
        delivered_cs=len(_first(cs_in)),
        delivered_csb=len(_first(csb_in)),
        duplicated_cs=cs_dup,
        duplicated_csb=csb_dup,
        dead_lettered=len(dead),
        cs_rate_before=round(cs_before, 1),
        cs_rate_during=round(cs_during, 1),
        cs_ratio=round(cs_during / cs_before, 3) if cs_before else None,
        csb_rate_before=round(csb_before, 1),
        csb_backlog_at_fault_end=backlog,
        csb_caught_up_after_s=round(catch_up, 1),
        csb_backlog_drain_rate=round(backlog / catch_up, 1),
        csb_rate_catching_up=round(csb_catching_up, 1),
    )
    assert dead == [], [h for _, h in dead[:3]]
    assert cs_during >= 0.9 * cs_before, (cs_before, cs_during)
    assert csb_catching_up >= csb_before, (csb_before, csb_catching_up, catch_up)


def _first(arrivals: list[tuple[float, str, str]]) -> dict[str, float]:
    first: dict[str, float] = {}
    for t, _, event in arrivals:
        first.setdefault(event, t)
    return first


async def test_csb_answering_503_for_two_minutes(pipeline: Pipeline):
    await scenario(pipeline, "503", fault_seconds=120, make_sick=lambda: pipeline.fault("csb", status=503))


async def test_csb_answering_429_with_retry_after_600(pipeline: Pipeline):
    await scenario(
        pipeline,
        "429",
        fault_seconds=60,
        make_sick=lambda: pipeline.fault("csb", status=429, retry_after=600),
        worker_env={"CS_RELAY_MAX_RETRY_AFTER": "20"},
    )


async def test_csb_answering_after_6_seconds(pipeline: Pipeline):
    await scenario(pipeline, "latency", fault_seconds=60, make_sick=lambda: pipeline.fault("csb", latency_ms=6000))


async def test_a_wrong_csb_key_for_a_minute_then_the_right_one(pipeline: Pipeline):
    await scenario(pipeline, "wrong-key", fault_seconds=60, make_sick=lambda: pipeline.fault("csb", status=401))
