"""Fault suite, hostile input (issue 22, finding 1 and build item 5): the calls a holder of
the public write key could use to grow a state row past the changelog's record limit,
sent through `cs-relay ingest`'s HTTP service to the real broker and a real worker
process; then normal traffic, delivered by the same worker process, whose `/ready`
stays true throughout (before the fix the broker refused the row, the worker stopped,
and its restart redid the record and stopped again).

The calls: 600 group calls of one user with groupIds at the longest intake accepts (and
600 longer ones), 2,000 tracks from distinct users with the longest userIds naming one
unknown `context.groupId` (and 2,000 with 700-character userIds), and visitors with full
queues logging in as one user. Asserted: the over-long ones are dead-lettered as
`id_too_long`, the rows stay bounded (the user's groups, the adopted queue at
CS_RELAY_PENDING_MAX_EVENTS with the rest dead-lettered as `pending_overflow`), and a
normal user's calls reach both partners afterwards from the same process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from streams.core.idlimits import MAX_ID_BYTES
from streams.core.traits import IDS_MAX_BYTES
from streams.ops.ingest import KafkaSink, create_app, serve
from streams.settings import Secret
from tests.pipeline import Pipeline, Worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

WRITE_KEY = "hostile-write-key"
MAX_EVENTS = 50  # CS_RELAY_PENDING_MAX_EVENTS of the worker
VISITORS, VISITOR_TRACKS = 5, 40
BATCH_BYTES = 450 * 1024  # under the ingest's 500 KB per request


def longest(tag: str, char: str) -> str:
    """An id at MAX_ID_BYTES: `tag`, then `char` (stored escaped: up to 6 bytes each)."""
    return tag + char * ((MAX_ID_BYTES - len(tag)) // len(char.encode()))


def hostile_calls() -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for n in range(600):  # finding 1: one user's remembered groups
        group = {"type": "group", "userId": "hostile-groups", "traits": {"name": "G"}, "messageId": f"hg{n}"}
        calls.append({**group, "groupId": longest(f"{n:04d}-", "\x01")})
        calls.append({**group, "groupId": f"{n:04d}-" + "g" * 1800, "messageId": f"hg-long{n}"})
    for n in range(2000):  # finding 1: the waiters row of one unknown group
        track = {"type": "track", "event": "Hostile", "context": {"groupId": "hostile-unknown"}}
        calls.append({**track, "userId": longest(f"{n:04d}-", "é"), "messageId": f"ht{n}"})
        calls.append({**track, "userId": f"{n:04d}-" + "u" * 700, "messageId": f"ht-long{n}"})
    return calls


def visitor_tracks() -> list[dict[str, Any]]:
    return [
        {"type": "track", "anonymousId": f"hostile-visitor-{v}", "event": f"V{v}-{n}", "messageId": f"hv{v}-{n}"}
        for v in range(VISITORS)
        for n in range(VISITOR_TRACKS)
    ]


def logins() -> list[dict[str, Any]]:
    return [
        {"type": "alias", "userId": "hostile-merger", "previousId": f"hostile-visitor-{v}", "messageId": f"ha{v}"}
        for v in range(VISITORS)
    ]


def batches(calls: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    for call in calls:
        cost = len(json.dumps(call, ensure_ascii=False).encode()) + 2
        if size + cost > BATCH_BYTES or len(out[-1]) >= 2000:
            out.append([])
            size = 0
        out[-1].append(call)
        size += cost
    return out


class Readiness:
    """Polls the worker's /ready while the scenario runs; remembers every answer."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.answers: Counter[int] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{self.worker.web_port}/ready") as response:
                        self.answers[response.status] += 1
                except aiohttp.ClientError:
                    self.answers[0] += 1  # no answer at all: the process stopped
                await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def get_json(worker: Worker, path: str) -> tuple[int, Any]:
    """The status and body of a worker endpoint; (0, None) while it does not answer."""
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{worker.web_port}{path}") as response:
                return response.status, await response.json()
    except aiohttp.ClientError:
        return 0, None


async def post_batches(port: int, calls: list[dict[str, Any]]) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    async with aiohttp.ClientSession() as session:
        for batch in batches(calls):
            body = json.dumps({"batch": batch}, ensure_ascii=False).encode()
            async with session.post(
                f"http://127.0.0.1:{port}/v1/batch", data=body, headers={**auth, "Content-Type": "application/json"}
            ) as response:
                assert response.status == 200, await response.text()


def reasons(dead: list[tuple[bytes, dict[str, str]]]) -> Counter[str]:
    return Counter(headers.get("cs-relay-reason", "") for _value, headers in dead)


async def test_hostile_calls_through_ingest_leave_the_worker_ready_and_delivering(pipeline: Pipeline):
    pipeline.env.update(CS_RELAY_PENDING_MAX_EVENTS=str(MAX_EVENTS), WEBHOOK_WAIT_FOR_GROUP="true")
    sink = KafkaSink(pipeline.bootstrap, pipeline.input_topic, timeout=30)
    runner, port = await serve(create_app([Secret(WRITE_KEY)], sink), "127.0.0.1", 0)
    worker = pipeline.start_worker()
    readiness = Readiness(worker)
    try:
        await pipeline.eventually(
            lambda: get_json(worker, "/ready"), lambda answer: answer[0] == 200, timeout=120, what="a ready worker"
        )
        readiness.start()
        started = time.monotonic()

        # 1. the hostile calls of finding 1
        await post_batches(port, hostile_calls())
        await post_batches(port, visitor_tracks())
        await pipeline.eventually(
            lambda: asyncio.gather(*(get_json(worker, f"/pending/hostile-visitor-{v}") for v in range(VISITORS))),
            lambda answers: all(
                status == 200 and len(body["queues"].get("clientsuccess", {}).get("held", [])) == VISITOR_TRACKS
                for status, body in answers
            ),
            timeout=240,
            what="every visitor's tracks held",
        )
        await post_batches(port, logins())
        too_long = 600 + 2000
        dead = await pipeline.eventually(
            pipeline.dead_letters,
            lambda d: reasons(d)["id_too_long"] >= too_long and reasons(d)["pending_overflow"] > 0,
            timeout=240,
            what="the over-long calls and the overflow dead-lettered",
        )
        assert reasons(dead)["id_too_long"] == too_long

        # 2. the rows stayed bounded
        status, user = await get_json(worker, "/users/hostile-groups")
        assert status == 200 and len(json.dumps(user["groups"])) <= IDS_MAX_BYTES
        assert user["groups"][-1] == longest("0599-", "\x01")

        async def adopted() -> tuple[Counter[str], tuple[int, Any]]:
            return reasons(await pipeline.dead_letters()), await get_json(worker, "/pending/hostile-merger")

        # each destination holds the visitors' 200 events (the webhook the logins too,
        # WEBHOOK_WAIT_FOR_GROUP): MAX_EVENTS kept, the rest dead-lettered
        least = 3 * (VISITORS * VISITOR_TRACKS - MAX_EVENTS)

        def kept_at_the_bound(answer: tuple[Counter[str], tuple[int, Any]]) -> bool:
            dead_reasons, (status, body) = answer
            if status != 200 or len(body.get("queues") or {}) != 3:
                return False
            full = all(len(q.get("held", [])) == MAX_EVENTS for q in body["queues"].values())
            return full and dead_reasons["pending_overflow"] >= least

        overflow, (status, pending) = await pipeline.eventually(
            adopted, kept_at_the_bound, timeout=240, what="every visitor's events adopted or overflowed"
        )
        assert overflow["pending_overflow"] <= least + len(logins())
        held = {dest: len(q.get("held", [])) for dest, q in pending["queues"].items()}
        assert set(held) >= {"clientsuccess", "customersuccessbox"}
        assert all(n == MAX_EVENTS for n in held.values()), held

        # 3. normal traffic, delivered by the same worker process
        await post_batches(
            port,
            [
                {"type": "identify", "userId": "normal-user", "traits": {"email": "n@example.com"}, "messageId": "n1"},
                {
                    "type": "group",
                    "userId": "normal-user",
                    "groupId": "normal-org",
                    "traits": {"name": "Normal Org", "account_id": "acc-normal"},
                    "messageId": "n2",
                },
                *(
                    {"type": "track", "userId": "normal-user", "event": f"Normal {n}", "messageId": f"n-t{n}"}
                    for n in range(5)
                ),
            ],
        )
        cs = await pipeline.eventually(
            pipeline.cs_state,
            lambda s: len(s["organizations"].get("normal-org", {}).get("events", [])) == 5,
            timeout=120,
            what="the normal user's tracks at ClientSuccess",
        )
        assert [e["event"] for e in cs["organizations"]["normal-org"]["events"]] == [f"Normal {n}" for n in range(5)]
        await pipeline.eventually(
            pipeline.csb_state,
            lambda s: sum(e["userId"] == "normal-user" for e in s["events"]) == 5,
            timeout=60,
            what="the normal user's tracks at CustomerSuccessBox",
        )
        await readiness.stop()
        assert worker.alive and pipeline.workers == [worker]  # the same process throughout
        assert set(readiness.answers) == {200}, (readiness.answers, worker.log_tail())
        assert sum(readiness.answers.values()) >= (time.monotonic() - started) / 0.2 / 4  # it was polled throughout
        log = worker.log.read_text(errors="replace")
        assert "TooLarge" not in log, worker.log_tail(80)  # no record refused for its size
    finally:
        if readiness._task is not None:
            await readiness.stop()
        await runner.cleanup()
        await sink.stop()
