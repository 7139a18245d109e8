"""The console's "Try a message" page (streams/ops/console/pages/trymessage.py) without a
broker: its session and CSRF checks, the input read as `cs-relay preview` reads a file,
and previews through the page's handler by the real runtime (tests/runtime_world.py):
this worker's for the users it owns, another worker's (its own runtime, behind an HTTP
server answering `POST /preview/{userId}` as the endpoint does) for the others. Nothing
is sent and nothing is written; everything shown is escaped."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.core.previewtext import outcome_line
from streams.ops import preview_api
from streams.ops.admin import ROUTED_HEADER
from streams.ops.console.pages.trymessage import by_owner
from streams.ops.console.web import Console
from streams.runtime import previewing
from tests.runtime_world import World
from tests.test_console import SCRIPT, TOKEN, Fakes, csrf_of, login, mount

CS_KEY = "cs-key-0123456789"  # tests.runtime_world's ClientSuccess API key


def seg(kind: str, user: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "userId": user, "messageId": message_id, **fields}


def lines(*messages: dict[str, Any]) -> str:
    return "\n".join(json.dumps(m) for m in messages)


class Other:
    """Another worker: its own runtime and its `POST /preview/{userId}` (the endpoint's
    reading of the body, then `streams.runtime.previewing.run`); what it was asked."""

    def __init__(self) -> None:
        self.world = World()
        self.asked: list[tuple[str, dict[str, str], list[str]]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        key = request.match_info["userId"]
        raws = preview_api.messages_of(await request.read(), key)
        self.asked.append((key, dict(request.headers), [json.loads(r)["messageId"] for r in raws]))
        if self.status != 200:
            return web.json_response({"error": "unavailable", "detail": "partition ownership is moving"}, status=503)
        return web.json_response({"results": previewing.run(self.world.rt, raws)})


@pytest.fixture
async def tried():
    """(fakes, this worker's world, the other worker, a logged-in browser)."""
    fakes, here, other = Fakes(), World(), Other()
    server = TestServer(web.Application())
    server.app.router.add_post("/preview/{userId}", other.handle)
    app = web.Application()
    console = Console(fakes.sources)
    mount(console, app)
    client = TestClient(TestServer(app))
    await server.start_server()
    await client.start_server()
    fakes.owners["u2"] = str(server.make_url("/")).rstrip("/")
    fakes.sources.preview = by_owner(
        fakes.locate, lambda raws: previewing.run(here.rt, raws), lambda: client.session, TOKEN
    )
    try:
        yield fakes, here, other, client
    finally:
        await client.close()
        await server.close()


async def try_messages(client: TestClient, text: str) -> tuple[int, str]:
    csrf = await csrf_of(client, "/console/try")
    response = await client.post("/console/try", data={"csrf": csrf, "messages": text})
    return response.status, await response.text()


def unescaped(body: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", " ", body))


async def test_the_page_is_in_the_navigation_with_a_csrf_form_saying_nothing_is_sent(tried):
    fakes, _, _, client = tried
    await login(client)
    home = await (await client.get("/console")).text()
    assert '<a href="/console/try" class="">Try a message</a>' in home
    response = await client.get("/console/try")
    body = await response.text()
    assert response.status == 200 and 'class="active">Try a message' in body
    assert '<form method="post" action="/console/try"' in body and 'name="csrf" value="' in body
    assert '<textarea id="messages" name="messages"' in body and "Nothing is sent to any destination" in body


async def test_try_needs_a_session_and_the_sessions_csrf_token(tried):
    fakes, here, other, client = tried
    asked: list[str] = []
    ask = fakes.sources.preview

    async def counting(key: str, raws: Any) -> Any:
        asked.append(key)
        return await ask(key, raws)

    fakes.sources.preview = counting
    text = lines(seg("track", "u1", "t1", event="Signed In"))
    assert (await client.get("/console/try")).status == 401
    assert (await client.post("/console/try", data={"messages": text})).status == 401
    await login(client)
    for csrf in (None, "", "forged"):
        data = {"messages": text} | ({"csrf": csrf} if csrf is not None else {})
        assert (await client.post("/console/try", data=data)).status == 403, csrf
    assert asked == []
    status, body = await try_messages(client, text)
    assert status == 200 and asked == ["u1"] and "held: " in unescaped(body)


async def test_a_preview_is_the_workers_step_against_the_users_state_and_writes_nothing(tried):
    """u1's track arrived before its group: ClientSuccess holds it. Trying the group
    call shows it released and sent now; the track after it, sent. The same outcomes,
    in the same words, as `cs-relay preview` prints; nothing sent, nothing written."""
    fakes, here, _, client = tried
    await here.publish(**seg("track", "u1", "t1", event="Report Created", properties={"value": 3}))
    held, records = here.pending("u1"), len(here.outbox.records)
    assert [e["seq"] for e in held["held"]] == [1]
    await login(client)
    messages = [
        seg("group", "u1", "g1", groupId="acme", traits={"name": "Acme"}),
        seg("track", "u1", "t2", event="Signed In"),
    ]
    status, body = await try_messages(client, json.dumps(messages, indent=2))  # a JSON array
    assert status == 200
    text = unescaped(body)
    assert "Preview only: nothing was sent and nothing was written. 2 of 2 message(s) would be delivered" in text
    assert "1. group 'acme' (user 'u1', messageId 'g1')" in text
    assert "2. track 'Signed In' (user 'u1', messageId 't2')" in text
    expected = previewing.run(here.rt, [json.dumps(m).encode() for m in messages])
    for result in expected:
        for outcome in result["outcomes"]:
            assert outcome_line(outcome) in text, outcome
    assert "releases held event 't1': POST" in text and "/events/Report%20Created?api_key=***" in text
    assert '"organization": {' in text and '"name": "Acme"' in text  # the JSON body, attributed
    assert CS_KEY not in body
    # Nothing sent, nothing written: the held track still held, no record produced.
    assert here.client.requests == [] and here.pending("u1") == held and len(here.outbox.records) == records
    assert here.rt.rows.user("u1").group_id is None


async def test_each_user_is_previewed_by_the_worker_that_owns_it_in_input_order(tried):
    """u2's state is the other worker's (its group there): previewed here, its track
    would be held; there, it is sent, attributed to its group."""
    fakes, here, other, client = tried
    await here.publish(**seg("group", "u1", "g1", groupId="acme", traits={"name": "Acme"}))
    await other.world.publish(**seg("group", "u2", "g2", groupId="bravo", traits={"name": "Bravo"}))
    sent_here, sent_there = len(here.client.requests), len(other.world.client.requests)
    await login(client)
    text = lines(
        seg("track", "u1", "a1", event="One"),
        seg("track", "u2", "b1", event="Two"),
        {"type": "track", "event": "nobody"},  # no userId nor anonymousId
        seg("track", "u1", "a2", event="Three"),
    )
    status, body = await try_messages(client, text)
    assert status == 200
    found = unescaped(body)
    order = [found.index(h) for h in ("1. track 'One'", "2. track 'Two'", "3. (not a valid", "4. track 'Three'")]
    assert order == sorted(order)
    assert "refused at intake (dead-lettered): missing_field" in found
    ((key, headers, ids),) = other.asked
    assert key == "u2" and ids == ["b1"]
    assert headers[ROUTED_HEADER] == "1" and headers["Authorization"] == f"Bearer {TOKEN}"  # one hop, the admin token
    two = found[found.index("2. track 'Two'") : found.index("3. (not a valid")]
    assert "sent now: POST" in two and '"name": "Bravo"' in two and "held" not in two
    assert len(other.world.client.requests) == sent_there and len(here.client.requests) == sent_here

    other.status = 503  # the owner cannot answer now: said for its user's messages, the others shown
    status, body = await try_messages(client, text)
    found = unescaped(body)
    assert status == 200 and "not previewed: the worker that owns this user" in found and "answered 503" in found
    four = found[found.index("4. track 'Three'") :]
    assert "sent now: POST" in four and '"name": "Acme"' in four


async def test_bad_input_is_said_and_kept_in_the_form(tried):
    fakes, _, _, client = tried
    await login(client)
    status, body = await try_messages(client, '{"type": "track"\nnot json')
    assert status == 400 and "Nothing previewed: line 1: not JSON" in unescaped(body)
    assert "{&quot;type&quot;: &quot;track&quot;\nnot json</textarea>" in body
    many = lines(*(seg("track", "u1", f"m{n}", event="x") for n in range(preview_api.MAX_MESSAGES + 1)))
    status, body = await try_messages(client, many)
    assert status == 400 and f"at most {preview_api.MAX_MESSAGES} at a time" in body
    status, body = await try_messages(client, "   ")
    assert status == 400 and "no message in the input" in body
    status, body = await try_messages(client, "x" * (1024 * 1024 + 1))  # past the web server's 1 MiB
    assert status == 413 and "too large" in body


async def test_everything_shown_is_escaped(tried):
    fakes, _, _, client = tried
    await login(client)
    script = "</textarea>" + SCRIPT
    messages = [
        seg("group", script, "g-" + script, groupId=script, traits={"name": script}),
        seg("track", script, script, event=script, properties={script: script}),
    ]
    fakes.owners.pop("u2")
    status, body = await try_messages(client, lines(*messages))
    assert status == 200
    assert "<script>alert" not in body and "</textarea><script" not in body
    assert body.count("</textarea>") == 1  # the form's own
    assert "&lt;/textarea&gt;&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in body
    assert "sent now" in unescaped(body)


def test_the_limits_docs_console_md_states_are_the_codes():
    from pathlib import Path

    from streams.ops.admin import FORWARD_TIMEOUT

    doc = " ".join((Path(__file__).resolve().parents[1] / "docs" / "console.md").read_text().split())
    most, mib = preview_api.MAX_MESSAGES, preview_api.MAX_BODY_BYTES // (1024 * 1024)
    assert f'"Try a message" takes at most {most} messages ({mib} MiB) at a time' in doc
    assert f"The owner of a user has {FORWARD_TIMEOUT:.0f} s to answer" in doc
