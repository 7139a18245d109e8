"""Delivery that loses nothing, end to end: partner outages, 429 with Retry-After,
refusals, a slow partner, a killed worker and a restarted broker. Each test prints
its figures (sent, delivered, duplicated, dead-lettered, recovery time)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime

import pytest

from streams.localkafka import LocalKafka
from tests.figures import report
from tests.pipeline import Pipeline, open_pipeline

pytestmark = pytest.mark.e2e

# Parked deliveries are retried within a second in tests (production: 10 s .. 300 s).
FAST_RETRIES = dict(CS_RELAY_QUICK_RETRIES="1", CS_RELAY_RETRY_BASE_DELAY="0.2", CS_RELAY_RETRY_MAX_DELAY="1")


def traffic(users: int, per_user: int, prefix: str = "u") -> list[dict]:
    """Each user: a group call, then `per_user` tracks with unique names, in order."""
    out = []
    for u in range(users):
        user = f"{prefix}{u}"
        out.append(
            {
                "type": "group",
                "userId": user,
                "groupId": f"g{u % 5}",
                "traits": {"name": f"Org {u % 5}"},
                "messageId": f"{user}-group",
            }
        )
    for n in range(per_user):
        for u in range(users):
            user = f"{prefix}{u}"
            out.append({"type": "track", "userId": user, "event": f"{user} e{n}", "messageId": f"{user}-{n}"})
    return out


def cs_events(state) -> list[tuple[str, str]]:
    """(user, event) in the order ClientSuccess received them, over all organizations."""
    events = [e for org in state["organizations"].values() for e in org["events"]]
    events.sort(key=lambda e: e["received_at"])
    return [(e["user_id"], e["event"]) for e in events]


def csb_events(state) -> list[tuple[str, str]]:
    return [(e["userId"], e["event"]) for e in sorted(state["events"], key=lambda e: e["received_at"])]


def check_delivery(received: list[tuple[str, str]], sent: list[dict]) -> Counter:
    """Every sent track arrived, each user's first arrivals are in sent order; returns
    how many times each event arrived."""
    counts = Counter(event for _, event in received)
    expected = [m["event"] for m in sent if m["type"] == "track"]
    missing = [e for e in expected if counts[e] == 0]
    assert not missing, f"{len(missing)} events never arrived, e.g. {missing[:5]}"
    first_seen: dict[str, list[str]] = defaultdict(list)
    seen = set()
    for user, event in received:
        if event not in seen:
            seen.add(event)
            first_seen[user].append(event)
    for user, events in first_seen.items():
        wanted = [m["event"] for m in sent if m["type"] == "track" and m["userId"] == user]
        assert events == wanted, f"order broken for {user}: {events[:10]}"
    return counts


def duplicates(counts: Counter) -> int:
    return sum(n - 1 for n in counts.values() if n > 1)


async def test_an_outage_of_one_partner_delays_nothing_at_the_other_and_loses_nothing(pipeline: Pipeline):
    sent = traffic(users=10, per_user=10)
    total = sum(m["type"] == "track" for m in sent)
    await pipeline.fault("cs", status=503, share=1.0)
    pipeline.start_worker(**FAST_RETRIES)
    started = time.monotonic()
    await pipeline.send(*sent)
    # The other partner gets everything while ClientSuccess answers 503 to all.
    await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) == total, what="all CSB events")
    csb_done = time.monotonic() - started
    during = await pipeline.cs_state()
    assert cs_events(during) == []
    await pipeline.clear_faults("cs")
    recovered = time.monotonic()
    state = await pipeline.eventually(
        pipeline.cs_state, lambda s: len(cs_events(s)) >= total, what="all CS events after recovery", timeout=90
    )
    recovery = time.monotonic() - recovered
    counts = check_delivery(cs_events(state), sent)
    csb_counts = check_delivery(csb_events(await pipeline.csb_state()), sent)
    letters = await pipeline.dead_letters()
    report(
        "503 outage",
        sent=total,
        cs_delivered=len(counts),
        cs_duplicates=duplicates(counts),
        csb_delivered=len(csb_counts),
        csb_duplicates=duplicates(csb_counts),
        dead_lettered=len(letters),
        csb_done_during_outage_s=f"{csb_done:.1f}",
        cs_recovery_s=f"{recovery:.1f}",
    )
    assert letters == []
    assert duplicates(counts) == 0 and duplicates(csb_counts) == 0


async def test_429_retry_after_is_honoured_and_nothing_is_dropped(pipeline: Pipeline):
    sent = traffic(users=1, per_user=5, prefix="rl")
    await pipeline.fault("csb", status=429, count=1, retry_after=2, path_prefix="/api_js/v1_1/track")
    pipeline.start_worker(CS_RELAY_CSB_RATE_LIMIT="50", **FAST_RETRIES)  # the limiter halves on the 429
    await pipeline.send(*sent)
    state = await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) == 5, what="all CSB events")
    requests = [r for r in await pipeline.csb_requests() if r["path"].endswith("/track")]
    refused = [r for r in requests if r["status"] == 429]
    assert len(refused) == 1
    retried = next(r for r in requests if r["status"] == 200 and r["json"] == refused[0]["json"])
    waited = (_when(retried) - _when(refused[0])).total_seconds()
    report("429 Retry-After", sent=5, delivered=len(state["events"]), waited_s=f"{waited:.2f}", retry_after_s=2)
    assert waited >= 2.0 - 0.01  # asyncio may wake a clock tick early; wall and monotonic clocks differ
    check_delivery(csb_events(state), sent)


def _when(request) -> datetime:
    return datetime.fromisoformat(request["received_at"].replace("Z", "+00:00"))


async def test_a_refusal_is_dead_lettered_and_the_users_later_events_still_flow(pipeline: Pipeline):
    sent = traffic(users=1, per_user=4, prefix="rf")
    await pipeline.fault("cs", status=422, count=1)
    pipeline.start_worker(**FAST_RETRIES)
    await pipeline.send(*sent)
    state = await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) == 3, what="three CS events")
    letters = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 1, what="the refused event")
    value, headers = letters[0]
    assert headers["cs-relay-reason"] == "partner_refused"
    assert headers["cs-relay-stage"] == "delivery"
    assert headers["cs-relay-status"] == "422"
    assert headers["cs-relay-destination"] == "clientsuccess"
    assert json.loads(value)["event"] == "rf0 e0"
    assert [e for _, e in cs_events(state)] == ["rf0 e1", "rf0 e2", "rf0 e3"]
    report("422 refusal", sent=4, delivered=3, dead_lettered=1)


async def test_a_slow_partner_does_not_slow_the_other(pipeline: Pipeline):
    sent = traffic(users=4, per_user=10, prefix="sl")
    total = sum(m["type"] == "track" for m in sent)
    await pipeline.fault("csb", latency_ms=1500)  # near the 2 s timeout set below
    pipeline.start_worker(CS_RELAY_HTTP_TIMEOUT="2", **FAST_RETRIES)
    await pipeline.send(*sent)
    await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) == total, what="all CS events")
    csb_so_far = len((await pipeline.csb_state())["events"])
    report("slow partner", sent=total, cs_delivered=total, csb_delivered_meanwhile=csb_so_far)
    # Each user's CSB calls go one after another at 1.5 s each: ClientSuccess finished
    # everything while CustomerSuccessBox had done only a fraction.
    assert csb_so_far < total / 2
    await pipeline.clear_faults("csb")
    state = await pipeline.eventually(
        pipeline.csb_state, lambda s: len(s["events"]) >= total, what="all CSB events", timeout=120
    )
    check_delivery(csb_events(state), sent)


async def test_one_user_s_burst_is_spilled_and_holds_nobody_back(pipeline: Pipeline):
    """Fairness (issue 23): past its share of deliveries in memory (4 here), a user's
    further deliveries are spilled to the spill tables and drained in order. The other
    users' tracks arrive while the burst still drains, and every burst event arrives
    once, in order, at both partners."""
    burst = traffic(users=1, per_user=60, prefix="burst")
    others = traffic(users=10, per_user=1, prefix="calm")
    total = len(burst) - 1 + 10
    for partner in ("cs", "csb"):
        await pipeline.fault(partner, latency_ms=50)  # the burst needs 3 s per partner, one at a time
    pipeline.start_worker(CS_RELAY_USER_SHARE="4")
    await pipeline.send(*burst, *others)

    def calm(state) -> int:
        return len({user for user, _ in cs_events(state) if user.startswith("calm")})

    state = await pipeline.eventually(pipeline.cs_state, lambda s: calm(s) == 10, what="the other users' tracks")
    burst_so_far = sum(user == "burst0" for user, _ in cs_events(state))
    assert burst_so_far < 60, "the burst was over before the others arrived: nothing to compare"
    spilled = await pipeline.records(f"{pipeline.name}-spillrows-changelog")
    assert spilled, "nothing was spilled"
    cs = await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) >= total, what="all CS events")
    csb = await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) >= total, what="all CSB events")
    for received in (cs_events(cs), csb_events(csb)):
        assert duplicates(check_delivery(received, [*burst, *others])) == 0
    report("burst", burst=60, others=10, burst_delivered_when_others_done=burst_so_far, spill_rows=len(spilled))


@pytest.mark.faults  # two worker starts and a stop: about 40 s, so `make faults`, not `make test`
async def test_a_worker_stopped_with_spilled_deliveries_leaves_them_to_the_next_in_order(pipeline: Pipeline):
    """A worker stopped while a burst's spilled deliveries drain: the next worker (its
    own data dir: the tables restored from their changelogs) finds them and delivers
    them, in order, at least once; nothing is lost."""
    burst = traffic(users=1, per_user=40, prefix="stop")
    for partner in ("cs", "csb"):
        await pipeline.fault(partner, latency_ms=100)  # 4 s per partner, one at a time
    worker = pipeline.start_worker(CS_RELAY_USER_SHARE="4")
    await pipeline.send(*burst)
    await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) >= 8, what="a fifth of the burst")
    assert worker.terminate() == 0
    at_stop = len(cs_events(await pipeline.cs_state()))
    assert at_stop < 40, "the burst was over before the stop: nothing to resume"
    pipeline.start_worker(1, CS_RELAY_USER_SHARE="4")
    cs = await pipeline.eventually(
        pipeline.cs_state, lambda s: len({e for _, e in cs_events(s)}) == 40, what="every CS event after the restart"
    )
    csb = await pipeline.eventually(
        pipeline.csb_state, lambda s: len({e for _, e in csb_events(s)}) == 40, what="every CSB event after the restart"
    )
    counts = [check_delivery(received, burst) for received in (cs_events(cs), csb_events(csb))]
    report("stopped while spilled", burst=40, cs_at_stop=at_stop, duplicates=sum(duplicates(c) for c in counts))


@pytest.mark.faults  # a worker killed mid-stream, about 25 s: make faults
async def test_a_killed_worker_loses_nothing(pipeline: Pipeline):
    sent = traffic(users=50, per_user=60, prefix="k")  # 3,000 tracks
    total = sum(m["type"] == "track" for m in sent)
    pipeline.env["CS_RELAY_SESSION_TIMEOUT"] = "6"  # the dead worker is noticed sooner
    worker = pipeline.start_worker()
    await pipeline.send(*sent)
    await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) >= total // 3, what="a third delivered")
    worker.kill()
    killed_at = time.monotonic()
    at_kill = len(cs_events(await pipeline.cs_state()))
    pipeline.start_worker()
    cs = await pipeline.eventually(
        pipeline.cs_state,
        lambda s: len({e for _, e in cs_events(s)}) == total,
        what="every CS event after the restart",
        timeout=120,
    )
    recovery = time.monotonic() - killed_at
    csb = await pipeline.eventually(
        pipeline.csb_state,
        lambda s: len({e for _, e in csb_events(s)}) == total,
        what="every CSB event after the restart",
        timeout=120,
    )
    cs_counts = check_delivery(cs_events(cs), sent)
    csb_counts = check_delivery(csb_events(csb), sent)
    report(
        "kill -9",
        sent=total,
        delivered_before_kill=at_kill,
        cs_duplicates=duplicates(cs_counts),
        csb_duplicates=duplicates(csb_counts),
        recovery_s=f"{recovery:.1f}",
    )
    # Duplicates come only from events in flight at the kill: at most the unacknowledged window.
    assert duplicates(cs_counts) <= 5000 and duplicates(csb_counts) <= 5000


@pytest.mark.faults  # the broker stopped and started again, about 25 s: make faults
async def test_a_broker_restart_loses_nothing(tmp_path):
    kafka = LocalKafka(port=0, data_dir=tmp_path / "kafka")
    kafka.start(timeout=120)
    pipe = await open_pipeline(kafka.bootstrap_servers, tmp_path)
    try:
        sent = traffic(users=10, per_user=20, prefix="b")
        total = sum(m["type"] == "track" for m in sent)
        pipe.start_worker(**FAST_RETRIES)
        first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
        await pipe.send(*first)
        await pipe.eventually(pipe.cs_state, lambda s: len(cs_events(s)) >= 20, what="some deliveries")
        await pipe.close_producer()
        stopped_at = time.monotonic()
        kafka.restart(timeout=120)
        await pipe.send(*second)
        cs = await pipe.eventually(
            pipe.cs_state,
            lambda s: len({e for _, e in cs_events(s)}) == total,
            what="every CS event after the broker restart",
            timeout=150,
        )
        recovery = time.monotonic() - stopped_at
        counts = check_delivery(cs_events(cs), sent)
        csb = await pipe.eventually(
            pipe.csb_state, lambda s: len({e for _, e in csb_events(s)}) == total, what="every CSB event", timeout=60
        )
        csb_counts = check_delivery(csb_events(csb), sent)
        report(
            "broker restart",
            sent=total,
            cs_duplicates=duplicates(counts),
            csb_duplicates=duplicates(csb_counts),
            recovery_s=f"{recovery:.1f}",
            worker_alive=pipe.workers[0].alive,
        )
        assert pipe.workers[0].alive
    finally:
        await pipe.close()
        kafka.stop()


async def test_a_replayed_dead_letter_is_delivered_despite_dedupe_and_only_where_it_failed(pipeline: Pipeline):
    import asyncio
    import subprocess

    sent = traffic(users=1, per_user=2, prefix="rp")
    await pipeline.fault("cs", status=422, count=1)
    worker = pipeline.start_worker(**FAST_RETRIES)
    await pipeline.send(*sent)
    await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 1, what="the refused event")
    await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) == 2, what="both at CSB")

    env = pipeline.worker_env()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    listed = await asyncio.to_thread(cli, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "partner_refused" in listed.stdout and "rp0 e0" in listed.stdout
    replayed = await asyncio.to_thread(cli, "dlq", "replay", "--reason", "partner_refused")
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout, replayed.stdout + replayed.stderr

    state = await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) == 2, what="the replayed event")
    assert sorted(e for _, e in cs_events(state)) == ["rp0 e0", "rp0 e1"]
    # CustomerSuccessBox had it already: the replay was for ClientSuccess only.
    await pipeline.send(sent[-1])  # a plain duplicate, by contrast, is dropped
    await pipeline.send({"type": "track", "userId": "rp0", "event": "rp0 marker", "messageId": "rp0-marker"})
    csb = await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) == 3, what="the marker at CSB")
    assert [e for _, e in csb_events(csb)] == ["rp0 e0", "rp0 e1", "rp0 marker"]
    assert worker.alive


async def test_dlq_replay_run_twice_delivers_each_dead_letter_once(pipeline: Pipeline):
    """Issue 16, item 6 (and item 9's "dlq replay run twice"): replays carry the dead
    letter's place in the dead-letter topic and the user's partition routes each once;
    `--dry-run` lists what would go and sends nothing."""
    import asyncio
    import subprocess

    sent = traffic(users=2, per_user=3, prefix="twice")
    await pipeline.fault("cs", status=422, count=3)  # the first three tracks at ClientSuccess
    worker = pipeline.start_worker(**FAST_RETRIES)
    await pipeline.send(*sent)
    dead = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 3, what="the refused events")
    await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s)) == 3, what="the others at CS")
    env = pipeline.worker_env()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    dry = await asyncio.to_thread(cli, "dlq", "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("partner_refused") == 3 and "would replay 3 dead letter(s)" in dry.stdout, dry.stdout
    for run in (1, 2):
        replayed = await asyncio.to_thread(cli, "dlq", "replay", "--reason", "partner_refused")
        assert replayed.returncode == 0 and "replayed 3" in replayed.stdout, (run, replayed.stdout, replayed.stderr)
    markers = [
        {"type": "track", "userId": u, "event": f"{u} marker", "messageId": f"{u}-marker"} for u in ("twice0", "twice1")
    ]
    await pipeline.send(*markers)  # after both replays in each user's input order
    state = await pipeline.eventually(
        pipeline.cs_state, lambda s: sum("marker" in e for _, e in cs_events(s)) == 2, what="the markers at CS"
    )
    counts = Counter(e for _, e in cs_events(state))
    expected = [m["event"] for m in sent if m["type"] == "track"] + [m["event"] for m in markers]
    report(
        "dlq replay run twice",
        dead_letters=len(dead),
        replays=6,
        delivered_at_cs=sum(counts.values()),
        duplicated=duplicates(counts),
    )
    assert sorted(counts) == sorted(expected) and duplicates(counts) == 0, counts
    assert len(await pipeline.dead_letters()) == 3  # nothing failed again
    assert worker.alive
