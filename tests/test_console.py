"""The operator console (streams/ops/console) without a broker: its session and CSRF
checks on every route, HTML escaping, the dead letters read from a fake reader of the
dead-letter topic and replayed as `cs-relay dlq replay` replays them, the journal's
bounds, and the runtime hooks that feed the journal (through the real runtime,
tests/runtime_world.py)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.core.deadletter import (
    REPLAY_DESTINATION_HEADER,
    REPLAY_HEADER,
    REPLAY_OF_HEADER,
    DeadLetterRecord,
    dead_letter_headers,
    read_headers,
)
from streams.ops import dlq
from streams.ops.console import html
from streams.ops.console.deadletters import Recent, RecentDeadLetters, _Reading, newest_first
from streams.ops.console.journal import Journal
from streams.ops.console.rates import destination_counts
from streams.ops.console.session import (
    COOKIE,
    LOGIN_FORGET_AFTER,
    LOGIN_FREE_ATTEMPTS,
    LOGIN_MAX_WAIT,
    LoginThrottle,
    Sessions,
    client_of,
)
from streams.ops.console.web import ROUTED_HEADER, SESSION_HEADER, Console, Located, Sources
from streams.ops.dlq import replay_headers
from streams.ops.observe import Stats
from streams.runtime import retries
from tests.runtime_world import FakeClient, World

TOKEN = "console-token-0123456789abcdef"
DLQ_TOPIC = "segment-dlq"
SCRIPT = "<script>alert('owned')</script>"
NOW = 1_800_000_000.0


def user_record(key: str = "u1", **traits: Any) -> dict[str, Any]:
    return {
        "v": 2,
        "key": key,
        "user_id": key,
        "traits": {"name": "Ada", **traits},
        "group_id": "g1",
        "groups": ["g1"],
        "slots": {"customersuccessbox": {"account_id": "acct-9"}},
        "first_seen": "2026-11-30T10:00:00+00:00",
        "last_seen": "2026-11-30T10:05:00+00:00",
        "anonymous_ids": [],
        "merged_into": None,
    }


def held_pending() -> dict[str, Any]:
    raw = json.dumps({"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-held"})
    return {
        "v": 1,
        "next_seq": 2,
        "queues": {
            "clientsuccess": {
                "held": [{"seq": 1, "held_at": NOW - 120, "raw": raw, "source": {}}],
                "releasing": [],
                "parked": [],
            }
        },
    }


class Fakes:
    def __init__(self, token: str = TOKEN) -> None:
        self.journal = Journal()
        self.users = {"u1": user_record()}
        self.pending = {"u1": held_pending()}
        self.groups = {"g1": {"v": 2, "group_id": "g1", "name": "Acme", "traits": {"plan": "gold"}, "slots": {}}}
        self.owners: dict[str, str] = {}  # key -> another worker's URL
        self.forwarded: list[str] = []
        self.forwarded_headers: list[dict[str, str]] = []
        self.replayed: list[Any] = []
        self.dead: list[DeadLetterRecord] = []  # the dead-letter topic, as the fake reader sees it
        self.reads = 0
        self.stats = Stats()
        self.sources = Sources(
            token=token,
            journal=self.journal,
            destinations={"clientsuccess": "ClientSuccess"},
            users=self.users,
            pending=self.pending,
            groups=self.groups,
            status=lambda: {
                "destinations": {
                    "clientsuccess": {
                        "name": "ClientSuccess",
                        "delivered": 3,
                        "retrying": 1,
                        "held": 1,
                        "releasing": 0,
                        "dead_lettered": 2,
                    }
                },
                "consumer_lag": {"total": 0},
            },
            counts=lambda: destination_counts(self.stats, ["clientsuccess"]),
            locate=self.locate,
            forward=self.forward,
            dead_letters=self.read_dead_letters,
            replay=self.replay,
            secrets=("cs-key-0123456789",),
            worker="http://worker-a:6066",
            input_topic="segment-events",
            clock=lambda: NOW,
        )

    def locate(self, key: str) -> Located:
        return Located(3, owner=self.owners.get(key))

    async def forward(self, request: web.Request, owner: str, headers: Mapping[str, str]) -> web.StreamResponse:
        self.forwarded.append(f"{owner}{request.path}")
        self.forwarded_headers.append(dict(headers))
        return web.Response(text="<p>from the owner</p>", content_type="text/html")

    async def read_dead_letters(self) -> Recent:
        self.reads += 1
        return Recent(tuple(newest_first(self.dead)), topic=DLQ_TOPIC)

    async def replay(self, records: Any) -> int:
        self.replayed.extend(records)
        return len(records)


def mount(console: Console, app: web.Application) -> None:
    """The console's routes on a plain aiohttp application, as the worker's Faust views
    serve them (`web._faust_view`): each through `Console.handle`."""
    for route in console.routes():
        for method, handler in (("GET", route.get), ("POST", route.post)):
            if handler is not None:

                async def serve(request: web.Request, route: Any = route, handler: Any = handler) -> web.StreamResponse:
                    return await console.handle(route, handler, request, **request.match_info)

                app.router.add_route(method, route.path, serve)


@pytest.fixture
async def console():
    fakes = Fakes()
    app = web.Application()
    mount(Console(fakes.sources), app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield fakes, client
    finally:
        await client.close()


async def login(client: TestClient, token: str = TOKEN) -> str:
    response = await client.post("/console/login", data={"token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()
    return response.cookies[COOKIE].value


async def csrf_of(client: TestClient, path: str = "/console") -> str:
    body = await (await client.get(path)).text()
    return re.search(r'name="csrf" value="([^"]+)"', body).group(1)


def dead_letter(
    reason: str = "partner_refused", user: str = "u1", *, partition: int = 0, offset: int = 0, **body: Any
) -> DeadLetterRecord:
    """A dead letter as read back from the dead-letter topic, at `partition`/`offset`."""
    value = json.dumps(
        {"type": "track", "userId": user, "event": "Bought", "messageId": f"m-{reason}", **body}
    ).encode()
    headers = dead_letter_headers(
        reason=reason,
        detail="ClientSuccess answered 400: bad",
        stage="delivery",
        source={"topic": "segment-events", "partition": 0, "offset": 7},
        destination="clientsuccess",
        status=400,
        now=datetime.fromtimestamp(NOW - 30 + offset, UTC),
    )
    return DeadLetterRecord(offset, partition, user.encode(), value, read_headers(headers.items()), topic=DLQ_TOPIC)


def add_dead_letter(fakes: Fakes, reason: str = "partner_refused", user: str = "u1", **body: Any) -> DeadLetterRecord:
    """A dead letter in the fake topic (any worker's), at the next offset of partition 2."""
    record = dead_letter(reason, user, partition=2, offset=len(fakes.dead), **body)
    fakes.dead.append(record)
    return record


# ------------------------------------------------------------------ auth

GETS = [
    "/console",
    "/console/search?q=u1",
    "/console/users/u1",
    "/console/groups/g1",
    "/console/destinations",
    "/console/dead-letters",
    "/console/try",
]
POSTS = ["/console/logout", "/console/dead-letters/confirm", "/console/dead-letters/replay", "/console/try"]


async def test_every_console_route_refuses_without_a_session(console):
    fakes, client = console
    entry = add_dead_letter(fakes)
    for path in GETS:
        response = await client.get(path, allow_redirects=False)
        body = await response.text()
        assert response.status == 401, path
        assert 'name="token"' in body and "Ada" not in body and "Acme" not in body and "m-held" not in body, path
    for path in POSTS:
        response = await client.post(path, data={"id": entry.identity, "scope": "filter"}, allow_redirects=False)
        assert response.status == 401, path
    assert fakes.replayed == [] and fakes.forwarded == []


@pytest.mark.parametrize("forge", ["garbage", "no-dot", "other-token", "tampered", "expired", "empty"])
async def test_a_bad_or_forged_cookie_is_refused(console, forge):
    fakes, client = console
    good = Sessions(TOKEN, clock=lambda: NOW).issue()[0]
    payload, signature = good.split(".")
    cookie = {
        "garbage": "abc.def",
        "no-dot": payload + signature,
        "other-token": Sessions("another-token-0123456789abc", clock=lambda: NOW).issue()[0],
        "tampered": payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature,
        "expired": Sessions(TOKEN, clock=lambda: NOW - 13 * 3600).issue()[0],
        "empty": "",
    }[forge]
    client.session.cookie_jar.update_cookies({COOKIE: cookie})
    response = await client.get("/console/users/u1")
    assert response.status == 401 and "Ada" not in await response.text()
    assert Sessions(TOKEN, clock=lambda: NOW).read(good) is not None  # the genuine one would pass


async def test_login_sets_a_signed_httponly_samesite_strict_cookie_without_the_token(console):
    fakes, client = console
    bad = await client.post("/console/login", data={"token": TOKEN + "x"}, allow_redirects=False)
    assert bad.status == 401 and COOKIE not in bad.cookies and "not the admin token" in await bad.text()
    response = await client.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/console"
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/console" in header
    assert TOKEN not in header
    page = await client.get("/console/users/u1")
    assert page.status == 200 and "Ada" in await page.text()


async def test_the_console_is_off_without_an_admin_token():
    fakes = Fakes(token="")
    app = web.Application()
    mount(Console(fakes.sources), app)
    async with TestClient(TestServer(app)) as client:
        for path in ["/console", "/console/login", "/console/users/u1"]:
            assert (await client.get(path)).status == 404
        assert (await client.post("/console/login", data={"token": ""})).status == 404


async def test_posts_need_the_sessions_csrf_token(console):
    fakes, client = console
    entry = add_dead_letter(fakes)
    await login(client)
    for csrf in (None, "", "forged", Sessions(TOKEN).csrf(Sessions(TOKEN).read(Sessions(TOKEN).issue()[0]))):
        data = {"id": entry.identity} | ({"csrf": csrf} if csrf is not None else {})
        response = await client.post("/console/dead-letters/replay", data=data, allow_redirects=False)
        assert response.status == 403, csrf  # another session's token does not do either
    assert fakes.replayed == []
    response = await client.post(
        "/console/dead-letters/replay",
        data={"id": entry.identity, "csrf": await csrf_of(client)},
        allow_redirects=False,
    )
    assert response.status == 303 and "replayed=1" in response.headers["Location"]
    assert fakes.replayed == [entry]


async def test_logout_ends_the_session_in_the_browser(console):
    fakes, client = console
    await login(client)
    response = await client.post("/console/logout", data={"csrf": await csrf_of(client)}, allow_redirects=False)
    assert response.status == 303 and "Max-Age=0" in response.headers["Set-Cookie"]
    assert (await client.get("/console/users/u1")).status == 401


# ------------------------------------------------------------------ escaping


async def test_a_script_trait_is_escaped_on_every_page_that_shows_it(console):
    fakes, client = console
    fakes.users["u1"] = user_record(name=SCRIPT, **{SCRIPT: SCRIPT})
    fakes.groups[SCRIPT] = {"v": 2, "group_id": SCRIPT, "name": SCRIPT, "traits": {"x": SCRIPT}, "slots": {}}
    fakes.journal.routed("u1", type("M", (), {"type": "group", "group_id": SCRIPT})(), None, None, NOW)
    add_dead_letter(fakes, reason=SCRIPT, note=SCRIPT)
    await login(client)
    for path in [
        "/console/users/u1",
        html.path("groups", SCRIPT),
        "/console/dead-letters",
        html.path("search", q=SCRIPT),
    ]:
        response = await client.get(path)
        body = await response.text()
        assert response.status == 200, path
        assert "<script>alert" not in body, path
        assert (
            "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in body
            or '\\"&lt;script' in body
            or "&lt;script&gt;" in body
        ), path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_fmt_escapes_values_and_html_concatenation_escapes_text():
    assert html.fmt("<b>{x}</b>", x='<i a="1">&') == "<b>&lt;i a=&quot;1&quot;&gt;&amp;</b>"
    assert html.Html("<p>") + "<script>" == "<p>&lt;script&gt;"
    assert html.path("users", "a/b?c#d", reason="x&y") == "/console/users/a%2Fb%3Fc%23d?reason=x%26y"


# ------------------------------------------------------------------ pages


async def test_user_page_shows_traits_group_ids_held_events_and_deliveries(console):
    fakes, client = console
    fakes.journal.delivery("u1", "clientsuccess", "m-sent", "done", 200, NOW - 5)
    await login(client)
    body = await (await client.get("/console/users/u1")).text()
    for text in (
        "Ada",
        "acct-9",
        'href="/console/groups/g1"',
        "held",
        "track Signed Up · m-held",
        "2 min",
        "m-sent",
        "delivered",
        "partition",
    ):
        assert text in body, text


async def test_a_user_owned_by_another_worker_is_forwarded_once(console):
    fakes, client = console
    fakes.owners["u2"] = "http://worker-b:6067"
    await login(client)
    response = await client.get("/console/users/u2")
    assert "from the owner" in await response.text() and fakes.forwarded == ["http://worker-b:6067/console/users/u2"]
    again = await client.get("/console/users/u2", headers={"X-CS-Relay-Routed": "1"})
    assert again.status == 503 and len(fakes.forwarded) == 1


async def test_search_by_user_group_and_account(console):
    fakes, client = console
    fakes.journal.routed(
        "u1",
        type("M", (), {"type": "track", "group_id": None})(),
        type("U", (), {"group_id": "g1", "slots": {"customersuccessbox": {"account_id": "acct-9"}}})(),
        None,
        NOW,
    )
    await login(client)
    user = await client.get("/console/search?q=u1", allow_redirects=False)
    assert user.status == 303 and user.headers["Location"] == "/console/users/u1"
    group = await (await client.get("/console/search?q=g1")).text()
    assert 'href="/console/groups/g1"' in group
    account = await (await client.get("/console/search?q=acct-9")).text()
    assert "user with account id acct-9" in account and 'href="/console/users/u1"' in account
    unknown = await client.get("/console/search?q=nobody")
    assert "Nothing known" in await unknown.text()
    members = await (await client.get("/console/groups/g1")).text()
    assert "Acme" in members and "gold" in members and 'href="/console/users/u1"' in members


async def test_destinations_page_has_counts_and_an_svg_chart(console):
    fakes, client = console
    fakes.journal.sample({"clientsuccess": {"delivered": 0}}, NOW - 120)
    fakes.journal.sample({"clientsuccess": {"delivered": 60}}, NOW - 60)
    fakes.stats.attempt("clientsuccess", 200, 0.01, "done")
    await login(client)
    body = await (await client.get("/console/destinations")).text()
    assert "<svg" in body and 'class="line delivered"' in body and ">100/min<" in body  # 60/min, on a round scale
    assert re.search(r"<td>ClientSuccess</td><td>3</td><td>1</td><td>1</td><td>0</td><td>2</td>", body)


async def test_the_dead_letters_page_lists_every_workers_dead_letters_read_from_the_topic(console):
    fakes, client = console
    ours = add_dead_letter(fakes, "partner_refused")
    fakes.dead.append(dead_letter("pending_expired", "u7", partition=5, offset=41))  # another worker's
    fakes.journal.replayed(ours.identity, NOW - 90)
    await login(client)
    body = await (await client.get("/console/dead-letters")).text()
    assert fakes.reads == 1
    assert "m-partner_refused" in body and "m-pending_expired" in body and "segment-dlq" in body
    assert f'value="{DLQ_TOPIC}/2/0"' in body and f'value="{DLQ_TOPIC}/5/41"' in body  # selected by identity
    assert "<td>5:41</td>" in body and 'href="/console/users/u7"' in body and "replayed 2 min ago" in body
    assert body.index("m-pending_expired") < body.index("m-partner_refused")  # newest first (failed-at)
    assert '<option value="pending_expired">' in body and '<option value="partner_refused">' in body
    assert "could not be read" not in body


async def test_the_dead_letters_page_says_when_the_topic_cannot_be_read(console):
    fakes, client = console

    async def broken() -> Recent:
        return Recent(complete=False, error="KafkaConnectionError: no broker", topic=DLQ_TOPIC)

    fakes.sources.dead_letters = broken
    app = web.Application()
    mount(Console(fakes.sources), app)
    async with TestClient(TestServer(app)) as other:
        await login(other)
        body = await (await other.get("/console/dead-letters")).text()
    assert "could not be read now (KafkaConnectionError: no broker)" in body


async def test_dead_letters_filter_confirm_and_replay_with_the_dead_letters_identity(console):
    fakes, client = console
    refused = add_dead_letter(fakes, "partner_refused", apiKey="cs-key-0123456789")
    expired = add_dead_letter(fakes, "pending_expired", user="u2")
    await login(client)
    listing = await (await client.get("/console/dead-letters?reason=pending_expired")).text()
    assert "m-pending_expired" in listing and "m-partner_refused" not in listing
    every = await (await client.get("/console/dead-letters")).text()
    assert "cs-key-0123456789" not in every and "***" in every  # the preview is redacted
    csrf = await csrf_of(client, "/console/dead-letters")

    nothing = await client.post("/console/dead-letters/confirm", data={"csrf": csrf, "scope": "selected"})
    assert "Select at least one" in await nothing.text()
    confirm = await client.post(
        "/console/dead-letters/confirm", data={"csrf": csrf, "scope": "filter", "reason": "partner_refused"}
    )
    page = await confirm.text()
    assert "Replay 1 dead letter(s)" in page and f'name="id" value="{refused.identity}"' in page
    assert f'value="{expired.identity}"' not in page and fakes.replayed == []  # only confirmed below
    assert "already replayed" not in page

    gone = f"{DLQ_TOPIC}/9/999"  # no longer among the recent ones
    done = await client.post("/console/dead-letters/replay", data={"csrf": csrf, "id": [refused.identity, gone]})
    text = await done.text()
    assert "Replayed 1 dead letter(s) to segment-events" in text and "1 selected are no longer among" in text
    assert fakes.replayed == [refused] and fakes.journal.replays(refused.identity) == [NOW]
    assert "replayed 0 s ago" in text
    # What is sent for it: the CLI's headers, naming the dead letter, so a second replay is a duplicate.
    assert replay_headers(fakes.replayed[0]) == [
        (REPLAY_HEADER, b"1"),
        (REPLAY_DESTINATION_HEADER, b"clientsuccess"),
        (REPLAY_OF_HEADER, f"{DLQ_TOPIC}/2/0".encode()),
    ]

    again = await client.post(
        "/console/dead-letters/confirm", data={"csrf": csrf, "scope": "selected", "id": refused.identity}
    )
    assert "1 of them already replayed from this console" in await again.text()


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append((topic, value, key, headers))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_replay_records_the_function_the_cli_and_the_console_share_sends_the_replay_of_identity(monkeypatch):
    producer = FakeProducer()
    monkeypatch.setattr(dlq, "_producer", lambda settings: producer)
    settings: Any = type(
        "S", (), {"input_topic": "segment-events", "kafka_security": None, "kafka_bootstrap_servers": ""}
    )
    records = [add_dead_letter_to([], "partner_refused"), dead_letter("pending_expired", "u2", partition=1, offset=8)]
    assert await dlq.replay_records(settings, records, batch_size=1) == 2
    assert [(t, k, v) for t, v, k, _ in producer.sent] == [("segment-events", r.key, r.value) for r in records]
    assert [dict(h)[REPLAY_OF_HEADER] for *_, h in producer.sent] == [b"segment-dlq/2/0", b"segment-dlq/1/8"]
    assert producer.stopped


def add_dead_letter_to(topic: list[DeadLetterRecord], reason: str) -> DeadLetterRecord:
    record = dead_letter(reason, partition=2, offset=len(topic))
    topic.append(record)
    return record


async def test_readings_of_the_topic_are_reused_for_a_few_seconds_and_renewed_after_a_dead_letter():
    clock = [NOW]
    reads: list[float] = []
    sent = [0.0]

    async def read() -> Recent:
        reads.append(clock[0])
        await asyncio.sleep(0.01)
        return Recent(topic=DLQ_TOPIC)

    recent = RecentDeadLetters(read, lambda: clock[0], ttl=5.0, stale_after=lambda: sent[0])
    await asyncio.gather(recent.get(), recent.get(), recent.get())  # concurrent requests share one reading
    clock[0] += 4
    await recent.get()
    assert reads == [NOW]
    sent[0] = clock[0]  # this worker sent a dead letter since
    clock[0] += 0.5
    await recent.get()
    clock[0] += 5
    await recent.get()
    assert reads == [NOW, NOW + 4.5, NOW + 9.5]


def test_a_reading_keeps_each_partitions_newest_within_its_byte_share():
    reading = _Reading(budget=2 * len(dead_letter().value) + 10)
    for offset in range(5):
        reading.add(dead_letter(partition=0, offset=offset))
    reading.add(dead_letter(partition=1, offset=0))
    kept = reading.records()
    assert [(r.partition, r.offset) for r in kept] == [(0, 4), (0, 3), (1, 0)] and reading.dropped
    recent = Recent(tuple(kept), topic=DLQ_TOPIC)
    assert recent.by_identity([f"{DLQ_TOPIC}/0/3", f"{DLQ_TOPIC}/0/3", f"{DLQ_TOPIC}/0/0"]) == ([kept[1]], 1)


async def test_static_assets_are_served_without_a_session_and_nothing_else_is(console):
    fakes, client = console
    css = await client.get("/console/static/console.css")
    js = await client.get("/console/static/console.js")
    assert css.status == 200 and css.content_type == "text/css" and js.status == 200
    assert (await client.get("/console/static/..%2Fweb.py")).status == 404
    assert (await client.get("/console/static/secret.txt")).status == 404


# ------------------------------------------------------------------ journal bounds


def test_delivery_ring_is_bounded_per_user_and_in_users():
    journal = Journal(users=3, per_user=4)
    for n in range(10):
        journal.delivery("u1", "clientsuccess", f"m{n}", "done", 200, NOW + n)
    assert [d.message_id for d in journal.deliveries("u1")] == ["m9", "m8", "m7", "m6"]
    for user in ("u2", "u3", "u4"):
        journal.delivery(user, "clientsuccess", "x", "retry", 503, NOW)
    assert journal.deliveries("u1") == [] and [d.words for d in journal.deliveries("u4")] == ["failed, will retry"]


def test_replays_remembered_are_bounded():
    journal = Journal(replays=2)
    for n in range(3):
        journal.replayed(f"dlq/0/{n}", NOW + n)
    journal.replayed("dlq/0/2", NOW + 9)
    assert journal.replays("dlq/0/0") == [] and journal.replays("dlq/0/2") == [NOW + 2, NOW + 9]
    assert journal.replays(None) == []
    journal.dead_letter(NOW)
    journal.dead_letter(NOW - 5)
    assert journal.last_dead_letter_at == NOW


def test_group_and_account_indexes_and_samples_are_bounded():
    journal = Journal(groups=2, per_group=2, accounts=1, per_account=1, samples=3)
    msg = type("M", (), {"type": "group", "group_id": None})
    for n, (user, group) in enumerate([("a", "g1"), ("b", "g1"), ("c", "g1"), ("d", "g2"), ("e", "g3")]):
        journal.routed(
            user,
            msg(),
            type("U", (), {"group_id": group, "slots": {"x": {"account_id": f"acct-{n}"}}})(),
            None,
            NOW + n,
        )
    assert journal.users_in_group("g1") == [] and [u for u, _ in journal.users_in_group("g3")] == ["e"]
    assert (
        len(journal.groups) == 2
        and len(journal.accounts) == 1
        and journal.with_account("acct-4") == [("user", "e", NOW + 4)]
    )
    for n in range(5):
        journal.sample({"cs": {"delivered": n * 10}}, NOW + n * 60)
    assert len(journal.samples) == 3
    rates = journal.rates(NOW + 240, span=3600)["cs"]
    assert [round(r["delivered"]) for _, r in rates] == [10, 10]


# ------------------------------------------------------------------ the runtime feeds it


async def test_the_runtime_feeds_deliveries_retries_dead_letters_and_groups_to_the_journal():
    world = World(client=FakeClient(answers=[503, 400]))
    journal = world.ops.journal
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    assert [(d.message_id, d.outcome, d.status) for d in journal.deliveries("u1")] == [("t1", "retry", 503)]
    assert [u for u, _ in journal.users_in_group("g1")] == ["u1"]

    first = world.pending("u1")["parked"][0]
    world.now = first["next_at"] + 0.1
    await retries.tick(world.rt)
    assert await world.settle()
    latest = journal.deliveries("u1")[0]
    assert (latest.message_id, latest.outcome, latest.status, latest.retry) == ("t1", "fail", 400, True)
    assert journal.last_dead_letter_at == world.now  # the console reads the topic again after it


# ------------------------------------------------------------------ login throttling (issue 22, finding 10)


async def test_wrong_logins_are_throttled_per_client_and_the_right_token_waits_too(console):
    """A client that keeps guessing the token is made to wait, longer after each wrong
    guess; while it waits even the right token is refused (no free guesses), with
    429 and Retry-After. Waiting long enough lets it in again."""
    fakes = Fakes()
    now = [NOW]
    fakes.sources.clock = lambda: now[0]
    app = web.Application()
    mount(Console(fakes.sources), app)
    async with TestClient(TestServer(app)) as client:
        for _ in range(LOGIN_FREE_ATTEMPTS):
            bad = await client.post("/console/login", data={"token": "wrong-token-0123456789"}, allow_redirects=False)
            assert bad.status == 401
        refused = await client.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
        assert refused.status == 429 and COOKIE not in refused.cookies
        wait = int(refused.headers["Retry-After"])
        assert wait >= 1 and "Too many" in await refused.text()
        now[0] += wait
        again = await client.post("/console/login", data={"token": "wrong-token-0123456789"}, allow_redirects=False)
        assert again.status == 401  # one more guess after the wait ...
        longer = await client.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
        assert longer.status == 429 and int(longer.headers["Retry-After"]) > wait  # ... and a longer wait
        now[0] += int(longer.headers["Retry-After"])
        assert (await client.post("/console/login", data={"token": TOKEN}, allow_redirects=False)).status == 303


def test_the_login_throttle_is_per_client_bounded_and_forgets():
    now = [NOW]
    throttle = LoginThrottle(clock=lambda: now[0], max_clients=3)
    for _ in range(LOGIN_FREE_ATTEMPTS):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") > 0
    assert throttle.wait("10.0.0.2") == 0  # another client is not held back by the first
    for n in range(20):
        throttle.failed(f"10.0.1.{n}")
    assert len(throttle) <= 3  # bounded: a flood of clients cannot grow it
    throttle.failed("10.0.0.9")
    throttle.succeeded("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 0 and "10.0.0.9" not in throttle
    for _ in range(LOGIN_FREE_ATTEMPTS + 30):
        throttle.failed("10.0.0.3")
    assert throttle.wait("10.0.0.3") <= LOGIN_MAX_WAIT
    now[0] += LOGIN_MAX_WAIT + LOGIN_FORGET_AFTER + 1
    assert throttle.wait("10.0.0.3") == 0


def test_the_throttle_counts_an_ipv6_client_by_its_64_network():
    """One host commonly holds a whole IPv6 /64: counted by address, it would have
    unlimited guesses."""
    assert client_of("2001:db8:1:2::1") == client_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_of("2001:db8:1:3::1") != client_of("2001:db8:1:2::1")
    assert client_of("10.0.0.1") == "10.0.0.1" and client_of("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_of(None) == "" and client_of("unix-socket") == "unix-socket"


# ------------------------------------------------------------------ forwarding to the owner (issue 22, finding 10)


async def test_a_forwarded_user_page_carries_the_session_id_not_the_cookie(console):
    fakes, client = console
    fakes.owners["u2"] = "http://worker-b:6067"
    cookie = await login(client)
    await client.get("/console/users/u2")
    (request_headers,) = fakes.forwarded_headers
    session = Sessions(TOKEN, clock=lambda: NOW).read(cookie)
    assert request_headers == {SESSION_HEADER: session.sid}


async def test_the_owner_serves_a_forwarded_page_on_the_admin_token_and_the_session_id(console):
    """The worker that owns a user answers a peer that sends the admin token and the
    browser's session id (never its cookie), with forms carrying that session's CSRF
    token; without the token, or with a wrong one, it answers 401 as to anyone."""
    fakes, client = console
    sessions = Sessions(TOKEN, clock=lambda: NOW)
    _, session = sessions.issue()
    peer = {ROUTED_HEADER: "1", SESSION_HEADER: session.sid}
    response = await client.get("/console/users/u1", headers={**peer, "Authorization": f"Bearer {TOKEN}"})
    body = await response.text()
    assert response.status == 200 and "Ada" in body
    assert f'name="csrf" value="{sessions.csrf(session)}"' in body
    wrong = {**peer, "Authorization": f"Bearer {TOKEN}x"}
    for headers in (peer, wrong, {ROUTED_HEADER: "1", "Authorization": f"Bearer {TOKEN}"}):
        refused = await client.get("/console/users/u1", headers=headers)
        assert refused.status == 401 and "Ada" not in await refused.text(), headers
    # Not for a POST: a peer only ever forwards pages.
    post = await client.post(
        "/console/logout", data={"csrf": sessions.csrf(session)}, headers={**peer, "Authorization": f"Bearer {TOKEN}"}
    )
    assert post.status == 401
