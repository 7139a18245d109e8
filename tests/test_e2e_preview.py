"""End to end: `cs-relay preview --url` against two real workers, the broker and the mock
partners. The worker that owns the user previews the messages against its tables (the
other forwards the request); nothing reaches a partner and no state changes."""

from __future__ import annotations

import html
import json
import re

import aiohttp
import pytest

from streams.cli.commands import main as cli_main
from streams.partitioner import owner_partition
from tests.pipeline import Pipeline, Worker
from tests.test_e2e_admin import ADMIN_TOKEN, get_json, seg, url, users_in_each_partition, wait_ready

pytestmark = pytest.mark.e2e

PARTNERS = ("clientsuccess", "customersuccessbox")


async def post(worker: Worker, path: str, body: bytes, token: str | None = ADMIN_TOKEN) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.post(url(worker, path), data=body, headers=headers) as response:
            return response.status, await response.json()


async def test_preview_through_a_worker_that_does_not_own_the_user(pipeline: Pipeline, tmp_path, capsys, monkeypatch):
    pipeline.env["CS_RELAY_ADMIN_TOKEN"] = ADMIN_TOKEN
    workers = [pipeline.start_worker(0), pipeline.start_worker(1)]
    ready = [await wait_ready(pipeline, w, partitions=1, token=ADMIN_TOKEN) for w in workers]
    by_user = f"{pipeline.name}-by-user"
    partition = owner_partition("u1", pipeline.partitions)
    other = next(w for w, r in zip(workers, ready, strict=True) if partition not in r["partitions"][by_user])

    # A track before the user's group: held for both partners, on the owner.
    await pipeline.send(seg("track", "u1", 1, event="Report Created", properties={"value": 3}))

    async def held() -> tuple[int, dict]:
        return await get_json(other, "/pending/u1", ADMIN_TOKEN)

    def holds(answer: tuple[int, dict]) -> bool:
        status, body = answer
        queues = (body or {}).get("queues", {}) if status == 200 else {}
        return all(len(queues.get(d, {}).get("held", [])) == 1 for d in ("clientsuccess", "customersuccessbox"))

    before = (await pipeline.eventually(held, holds, what="the track held for both partners"))[1]

    path = tmp_path / "try.jsonl"
    group = seg("group", "u1", 2, groupId="acme", traits={"name": "Acme"})
    track = seg("track", "u1", 3, event="Signed In")
    path.write_text(json.dumps(group) + "\n" + json.dumps(track) + "\n")
    monkeypatch.setenv("CS_RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
    code = cli_main(["preview", str(path), "--url", url(other, ""), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    first, second = (json.loads(row) for row in out.splitlines())
    released = {(o["destination"], o.get("messageId")) for o in first["outcomes"] if o["verdict"] == "release"}
    assert released == {("clientsuccess", "track-u1-1"), ("customersuccessbox", "track-u1-1")}
    cs = {o["destination"]: o for o in second["outcomes"]}["clientsuccess"]
    assert cs["verdict"] == "send" and cs["request"]["url"].endswith("/events/Signed%20In?api_key=***")
    assert cs["request"]["json"]["identity"]["organization"] == {"id": "acme", "name": "Acme"}
    env = pipeline.worker_env()
    for name in ("CLIENTSUCCESS_API_KEY", "CSB_API_KEY", "WEBHOOK_SHARED_SECRET"):
        assert env[name] and env[name] not in out, name  # credentials are masked

    # Nothing was sent, nothing was written.
    assert await pipeline.cs_requests() == [] and await pipeline.csb_requests() == []
    assert await held() == (200, before)

    # One user per request; the token is required, and a missing one is said.
    mixed = json.dumps({"messages": [track, seg("track", "u2", 1, event="x")]}).encode()
    status, body = await post(other, "/preview/u1", mixed)
    assert status == 400 and "one user per request" in body["detail"]
    status, _ = await post(other, "/preview/u1", json.dumps({"messages": [track]}).encode(), token=None)
    assert status == 401
    monkeypatch.delenv("CS_RELAY_ADMIN_TOKEN")
    assert cli_main(["preview", str(path), "--url", url(other, "")]) == 2
    assert "export CS_RELAY_ADMIN_TOKEN" in capsys.readouterr().err


async def test_the_consoles_try_a_message_page_previews_each_user_on_its_owner(pipeline: Pipeline):
    """Asked of one worker, the console's "Try a message" page previews each user's
    messages on the worker that owns the user, against that user's state there (each
    user's held track, released by the group call tried); nothing reaches a partner and
    no state changes."""
    pipeline.env["CS_RELAY_ADMIN_TOKEN"] = ADMIN_TOKEN
    workers = [pipeline.start_worker(0), pipeline.start_worker(1)]
    for worker in workers:
        await wait_ready(pipeline, worker, partitions=1, token=ADMIN_TOKEN)
    users = users_in_each_partition(pipeline.partitions)
    assert len(users) == 2  # one owned by each worker
    await pipeline.send(*(seg("track", u, 1, event="Report Created") for u in users))

    async def pending() -> list[tuple[int, dict]]:
        return [await get_json(workers[0], f"/pending/{u}", ADMIN_TOKEN) for u in users]

    def held(answers: list[tuple[int, dict]]) -> bool:
        return all(
            status == 200 and all(len(body["queues"].get(d, {}).get("held", [])) == 1 for d in PARTNERS)
            for status, body in answers
        )

    before = await pipeline.eventually(pending, held, what="each user's track held for both partners")
    messages = [
        message
        for u in users
        for message in (seg("group", u, 2, groupId=f"g-{u}", traits={"name": u}), seg("track", u, 3, event="Signed In"))
    ]

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(url(workers[0], "/console/login"), data={"token": ADMIN_TOKEN}) as response:
            assert response.status == 200
        async with browser.get(url(workers[0], "/console/try")) as response:
            form = await response.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        text = "\n".join(json.dumps(m) for m in messages)
        async with browser.post(url(workers[0], "/console/try"), data={"messages": text}) as response:
            assert response.status == 403  # no CSRF token
        async with browser.post(url(workers[0], "/console/try"), data={"messages": text, "csrf": csrf}) as response:
            status, body = response.status, html.unescape(await response.text())
    assert status == 200, body[:3000]
    assert "Preview only: nothing was sent and nothing was written. 4 of 4 message(s) would be delivered" in body
    for user in users:
        assert body.count(f"releases held event 'track-{user}-1'") == len(PARTNERS), user
        assert f"track 'Signed In' (user '{user}', messageId 'track-{user}-3')" in body
    assert "/events/Signed%20In?api_key=***" in body and "Authorization: ***" in body
    env = pipeline.worker_env()
    for name in ("CLIENTSUCCESS_API_KEY", "CSB_API_KEY", "WEBHOOK_SHARED_SECRET"):
        assert env[name] and env[name] not in body, name  # credentials are masked

    # Nothing was sent, nothing was written.
    assert await pipeline.cs_requests() == [] and await pipeline.csb_requests() == []
    assert await pending() == before
