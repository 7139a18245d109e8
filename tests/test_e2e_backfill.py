"""End to end: `cs-relay backfill` delivers the input topic's past messages to a
destination that was off while they were routed, attributed with the worker's state of
today; a second backfill over the same span sends nothing; a dry run sends nothing.
The real broker, a worker process and the mock partners."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.pipeline import REPO, Pipeline, paths
from tests.test_e2e_admin import seg, wait_ready

pytestmark = pytest.mark.e2e


async def backfill(pipeline: Pipeline, worker_port: int, *args: str) -> subprocess.CompletedProcess:
    env = pipeline.worker_env()  # every destination on, as an operator's shell would have it
    command = [sys.executable, "-m", "streams.cli", "backfill", "--destination", "customersuccessbox", *args]
    command += ["--url", f"http://127.0.0.1:{worker_port}"]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )


async def test_a_destination_turned_on_later_gets_the_span_once(pipeline: Pipeline):
    worker = pipeline.start_worker(CSB_API_KEY="")  # CustomerSuccessBox off while these are routed
    await wait_ready(pipeline, worker)
    await pipeline.send(
        seg("track", "u1", 1, event="Early Report"),  # before its group: attributed with today's state
        seg("group", "u1", 2, groupId="acme", traits={"name": "Acme", "plan": "pro"}),
        seg("identify", "u1", 3, traits={"email": "u1@example.com"}),
        seg("track", "u1", 4, event="Report Created"),
        seg("track", "u2", 1, event="Lonely"),  # no group, even today: not attributable
    )
    await pipeline.eventually(
        pipeline.cs_requests, lambda r: len(r) == 2, what="ClientSuccess got u1's two tracks (the worker is done)"
    )
    assert await pipeline.csb_requests() == []

    dry = await backfill(pipeline, worker.web_port, "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "read 5, would send 4," in dry.stdout and await pipeline.csb_requests() == []

    first = await backfill(pipeline, worker.web_port, "--since", "1h")
    assert first.returncode == 0, first.stderr
    assert "read 5, sent 4, already delivered by an earlier backfill 0" in first.stdout, first.stdout
    assert "1 not attributable with today's state" in first.stdout
    requests = await pipeline.csb_requests()
    assert paths(requests) == [
        "/api_js/v1_1/track",
        "/api_js/v1_1/account",
        "/api_js/v1_1/identify",
        "/api_js/v1_1/track",
    ]
    early = requests[0]["json"]
    assert early["event"] == "Early Report" and early["accountId"] == "acme"  # today's state attributes it

    second = await backfill(pipeline, worker.web_port, "--since", "1h")
    assert second.returncode == 0, second.stderr
    assert "read 5, sent 0, already delivered by an earlier backfill 5" in second.stdout, second.stdout
    assert len(await pipeline.csb_requests()) == 4


async def test_an_unreachable_worker_and_a_bad_time_are_one_line(pipeline: Pipeline):
    bad = await backfill(pipeline, 9, "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.strip().endswith("or 90m, 24h, 7d")
    await pipeline.send(seg("track", "u1", 1, event="x"))
    down = await backfill(pipeline, 9, "--since", "1h")
    assert down.returncode == 2, down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("cs-relay backfill: today's state: cannot reach the worker")
