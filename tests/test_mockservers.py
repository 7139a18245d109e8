"""The partner imitations in mockservers/: partner rules, partner views, recording, faults."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.destinations.clientsuccess import mock as clientsuccess
from streams.destinations.customersuccessbox import mock as customersuccessbox
from mockservers.server import credentials_from_env, start_mocks

SOURCE, CS_KEY, CSB_KEY = "src-1", "cs-secret-key", "csb-secret-key"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def cs() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(clientsuccess.create_app(SOURCE, CS_KEY))) as client:
        yield client


@pytest.fixture
async def csb() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(customersuccessbox.create_app(CSB_KEY))) as client:
        yield client


def cs_path(event: str, source: str = SOURCE) -> str:
    return f"/collector/1.0.0/projects/{quote(source, safe='')}/events/{quote(event, safe='')}"


def cs_body(org: str = "o1", user: str = "u1", value: Any = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identity": {"organization": {"id": org, "name": "Org " + org}, "user": {"id": user}},
        "value": value,
    }
    body.update(extra)
    return body


async def cs_post(client: TestClient, event: str = "Signed In", body: Any = None, *, key: str = CS_KEY,
                  source: str = SOURCE, **kwargs: Any) -> aiohttp.ClientResponse:
    kwargs.setdefault("json", cs_body() if body is None else body)
    return await client.post(cs_path(event, source), params={"api_key": key}, **kwargs)


def bearer(key: str = CSB_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def csb_post(client: TestClient, endpoint: str, body: Any, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> aiohttp.ClientResponse:
    return await client.post(f"/api_js/v1_1/{endpoint}", json=body, headers=bearer() if headers is None else headers,
                             **kwargs)


async def recorded(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/_mock/requests", params=params)
    assert response.status == 200
    return await response.json()


async def state(client: TestClient) -> dict[str, Any]:
    response = await client.get("/_mock/state")
    assert response.status == 200
    return await response.json()


async def add_fault(client: TestClient, **fault: Any) -> list[dict[str, Any]]:
    response = await client.post("/_mock/faults", json=fault)
    assert response.status == 200, await response.text()
    return await response.json()


# ---------------------------------------------------------------- ClientSuccess


async def test_cs_event_is_created_and_shows_in_the_partner_view(cs: TestClient) -> None:
    body = cs_body(value=-2.5, timestamp="2026-11-01T10:00:00Z")
    body["identity"]["user"].update(name="Ann Lee", email="ann@x.example")
    response = await cs_post(cs, "Viewed Home Page", body)
    assert response.status == 200
    assert await response.json() == {"created": True}
    await cs_post(cs, "Signed In", cs_body(value=3))  # no name/email: the known ones stay

    orgs = (await state(cs))["organizations"]
    assert list(orgs) == ["o1"]
    org = orgs["o1"]
    assert org["name"] == "Org o1"
    assert org["users"] == {"u1": {"name": "Ann Lee", "email": "ann@x.example"}}
    assert [(e["event"], e["user_id"], e["value"], e["timestamp"]) for e in org["events"]] == [
        ("Viewed Home Page", "u1", -2.5, "2026-11-01T10:00:00Z"),
        ("Signed In", "u1", 3, None),
    ]
    assert all(e["received_at"].endswith("Z") for e in org["events"])


async def test_cs_event_id_is_url_decoded_even_with_a_slash(cs: TestClient) -> None:
    response = await cs_post(cs, "Paid 50% / month & more")
    assert response.status == 200
    events = (await state(cs))["organizations"]["o1"]["events"]
    assert events[0]["event"] == "Paid 50% / month & more"


async def test_cs_organization_name_and_users_are_upserted(cs: TestClient) -> None:
    await cs_post(cs, body=cs_body(user="u1"))
    renamed = cs_body(user="u2")
    renamed["identity"]["organization"]["name"] = "Renamed"
    await cs_post(cs, body=renamed)
    await cs_post(cs, body=cs_body(org="o2", user="u1"))
    orgs = (await state(cs))["organizations"]
    assert orgs["o1"]["name"] == "Renamed"
    assert set(orgs["o1"]["users"]) == {"u1", "u2"}
    assert set(orgs["o2"]["users"]) == {"u1"}


@pytest.mark.parametrize("source, key", [("other-source", CS_KEY), (SOURCE, "wrong-key"), (SOURCE, "")])
async def test_cs_unknown_source_or_key_is_401_without_echoing_the_key(cs: TestClient, source: str, key: str) -> None:
    response = await cs_post(cs, source=source, key=key)
    assert response.status == 401
    body = await response.json()
    assert body["created"] is False and body["error"]
    text = await response.text()
    assert CS_KEY not in text and (not key or key not in text)
    assert (await state(cs))["organizations"] == {}


async def test_cs_missing_api_key_is_401(cs: TestClient) -> None:
    response = await cs.post(cs_path("E"), json=cs_body())
    assert response.status == 401


async def test_cs_auth_is_checked_before_the_body(cs: TestClient) -> None:
    response = await cs_post(cs, body={"nonsense": True}, key="wrong")
    assert response.status == 401


@pytest.mark.parametrize(
    "body, expected",
    [
        ([1, 2], ["body must be a JSON object"]),
        ("text", ["body must be a JSON object"]),
        ({}, ["identity.organization.id", "identity.organization.name", "identity.user.id", "value is required"]),
        ({"identity": {"organization": {"id": "", "name": "N"}, "user": {"id": "u"}}, "value": 1},
         ["identity.organization.id"]),
        ({"identity": {"organization": {"id": "o", "name": ""}, "user": {"id": "u"}}, "value": 1},
         ["identity.organization.name"]),
        ({"identity": {"organization": {"id": "o"}, "user": {"id": "u"}}, "value": 1},
         ["identity.organization.name"]),
        ({"identity": {"organization": {"id": "o", "name": "N"}, "user": {"id": " "}}, "value": 1},
         ["identity.user.id"]),
        ({"identity": {"organization": {"id": "o", "name": "N"}}, "value": 1}, ["identity.user.id"]),
        ({"identity": "o1", "value": 1}, ["identity must be an object"]),
        (cs_body(value=True), ["value must be a number"]),
        (cs_body(value="3"), ["value must be a number"]),
        (cs_body(value=None), ["value must be a number"]),
        ({"identity": cs_body()["identity"]}, ["value is required"]),
        (cs_body(timestamp="yesterday"), ["timestamp"]),
        (cs_body(timestamp=12), ["timestamp"]),
        (cs_body(timestamp="2026-13-01T00:00:00Z"), ["timestamp"]),
    ],
)
async def test_cs_body_breaking_the_rules_is_422_listing_every_problem(
    cs: TestClient, body: Any, expected: list[str]
) -> None:
    response = await cs_post(cs, body=body)
    assert response.status == 422
    answer = await response.json()
    assert answer["created"] is False
    assert len(answer["errors"]) == len(expected)
    for fragment, error in zip(expected, answer["errors"]):
        assert fragment in error
    assert (await state(cs))["organizations"] == {}


async def test_cs_body_that_is_not_json_is_422(cs: TestClient) -> None:
    response = await cs_post(cs, json=None, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status == 422
    assert (await response.json())["errors"] == ["body must be a JSON object"]


@pytest.mark.parametrize("timestamp", ["2026-11-01T10:00:00Z", "2026-11-01T10:00:00.123+02:00", "2026-11-01"])
async def test_cs_iso8601_timestamps_are_accepted(cs: TestClient, timestamp: str) -> None:
    assert (await cs_post(cs, body=cs_body(timestamp=timestamp))).status == 200


@pytest.mark.parametrize("method, path", [("POST", "/segment/1.0.0/direct"), ("GET", "/"), ("POST", "/collector/1.0.0/x")])
async def test_cs_other_paths_are_404_json(cs: TestClient, method: str, path: str) -> None:
    response = await cs.request(method, path, json={})
    assert response.status == 404
    assert (await response.json())["created"] is False


async def test_cs_wrong_method_on_the_event_path_is_a_json_error(cs: TestClient) -> None:
    response = await cs.get(cs_path("E"), params={"api_key": CS_KEY})
    assert response.status == 405
    assert (await response.json())["created"] is False


async def test_cs_requests_are_recorded_with_the_key_redacted(cs: TestClient) -> None:
    await cs_post(cs, "Signed In", headers={"X-Trace": "t1"})
    await cs_post(cs, "Signed In", key="wrong-key")
    await cs.post("/nowhere", data=b"plain text")
    records = await recorded(cs)
    assert [r["status"] for r in records] == [200, 401, 404]
    first = records[0]
    assert first["method"] == "POST"
    assert first["path"] == f"/collector/1.0.0/projects/{SOURCE}/events/Signed In"
    assert first["raw_path"] == cs_path("Signed In")
    assert first["query"] == {"api_key": "***"}
    assert first["headers"]["X-Trace"] == "t1"
    assert first["json"] == cs_body()
    assert first["received_at"].endswith("Z")
    assert records[2]["json"] is None
    everything = await (await cs.get("/_mock/requests")).text()
    assert CS_KEY not in everything and "wrong-key" not in everything


# ---------------------------------------------------------------- CustomerSuccessBox


async def test_csb_calls_build_the_partner_view(csb: TestClient) -> None:
    long_id = "p" * 80
    calls = [
        ("account", {"type": "account", "accountId": "A1", "traits": {"name": "Acme", "plan": "free"}}),
        ("account", {"type": "account", "accountId": "A1", "traits": {"plan": "pro"}}),
        ("identify", {"type": "identify", "accountId": "A1", "userId": "u1", "traits": {"email": "a@x"}}),
        ("identify", {"type": "identify", "accountId": "A1", "userId": "u1", "traits": {"vip": True}}),
        ("track", {"type": "track", "accountId": "A1", "userId": "u1", "event": "Ordered", "properties": {"cost": 3},
                   "productId": long_id, "moduleId": "m1", "timestamp": "2026-11-01T00:00:00Z"}),
        ("page", {"type": "page", "accountId": "A1", "userId": "u1", "name": "Orders", "properties": {"path": "/o"},
                  "timestamp": "2026-11-02T00:00:00Z"}),
    ]
    for endpoint, body in calls:
        response = await csb_post(csb, endpoint, body)
        assert response.status == 200, await response.text()
        assert await response.json() == {"status": "ok"}

    view = await state(csb)
    assert view["accounts"] == {"A1": {"traits": {"name": "Acme", "plan": "pro"}}}
    assert view["users"] == {"A1": {"u1": {"traits": {"email": "a@x", "vip": True}}}}
    [event] = view["events"]
    assert event["productId"] == "p" * 64
    assert {k: event[k] for k in ("accountId", "userId", "event", "properties", "moduleId", "timestamp")} == {
        "accountId": "A1", "userId": "u1", "event": "Ordered", "properties": {"cost": 3}, "moduleId": "m1",
        "timestamp": "2026-11-01T00:00:00Z",
    }
    assert event["received_at"].endswith("Z")
    [page] = view["pages"]
    assert {k: page[k] for k in ("accountId", "userId", "name", "properties", "timestamp")} == {
        "accountId": "A1", "userId": "u1", "name": "Orders", "properties": {"path": "/o"},
        "timestamp": "2026-11-02T00:00:00Z",
    }


@pytest.mark.parametrize("endpoint", ["identify", "track", "page"])
async def test_csb_call_for_an_unseen_account_upserts_it(csb: TestClient, endpoint: str) -> None:
    body = {"accountId": "NEW", "userId": "u9", "event": "E"}
    assert (await csb_post(csb, endpoint, body)).status == 200
    view = await state(csb)
    assert view["accounts"] == {"NEW": {"traits": {}}}
    assert view["users"] == {"NEW": {"u9": {"traits": {}}}}


async def test_csb_basic_auth_with_the_key_as_user_name_is_accepted(csb: TestClient) -> None:
    token = base64.b64encode(f"{CSB_KEY}:".encode()).decode()
    response = await csb_post(csb, "account", {"accountId": "A1"}, {"Authorization": f"Basic {token}"})
    assert response.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": CSB_KEY},
        {"Authorization": "Basic " + base64.b64encode(b"wrong:" + CSB_KEY.encode()).decode()},
        {"Authorization": "Basic !!!not-base64"},
    ],
)
async def test_csb_missing_or_wrong_key_is_401(csb: TestClient, headers: dict[str, str]) -> None:
    response = await csb_post(csb, "account", {"accountId": "A1"}, headers)
    assert response.status == 401
    assert (await response.json())["error"]
    assert CSB_KEY not in await response.text()
    assert (await state(csb))["accounts"] == {}


@pytest.mark.parametrize(
    "endpoint, body, expected",
    [
        ("account", [], ["body must be a JSON object"]),
        ("account", {}, ["accountId"]),
        ("account", {"accountId": "", "traits": []}, ["accountId", "traits"]),
        ("identify", {"accountId": "A"}, ["userId"]),
        ("identify", {}, ["accountId", "userId"]),
        ("identify", {"accountId": "A", "userId": "u", "traits": "x"}, ["traits"]),
        ("track", {}, ["accountId", "userId", "event"]),
        ("track", {"accountId": "A", "userId": "u", "event": ""}, ["event"]),
        ("track", {"accountId": "A", "userId": "u", "event": "E", "properties": None}, ["properties"]),
        ("page", {"accountId": "A", "userId": ""}, ["userId"]),
        ("page", {"accountId": "A", "userId": "u", "properties": [1]}, ["properties"]),
    ],
)
async def test_csb_invalid_body_is_400_listing_every_problem(
    csb: TestClient, endpoint: str, body: Any, expected: list[str]
) -> None:
    response = await csb_post(csb, endpoint, body)
    assert response.status == 400
    errors = (await response.json())["errors"]
    assert len(errors) == len(expected)
    for fragment, error in zip(expected, errors):
        assert fragment in error
    assert await state(csb) == {"accounts": {}, "users": {}, "events": [], "pages": []}


async def test_csb_body_that_is_not_json_is_400(csb: TestClient) -> None:
    response = await csb.post("/api_js/v1_1/track", data=b"{oops", headers=bearer())
    assert response.status == 400
    assert (await response.json())["errors"] == ["body must be a JSON object"]


@pytest.mark.parametrize("path", ["/api_js/v1_1/group", "/api_js/v1_1/", "/api/v1/track", "/"])
async def test_csb_unknown_path_is_404_json(csb: TestClient, path: str) -> None:
    response = await csb.post(path, json={"accountId": "A"}, headers=bearer())
    assert response.status == 404
    assert "error" in await response.json()


async def test_csb_requests_are_recorded_with_authorization_redacted(csb: TestClient) -> None:
    await csb_post(csb, "account", {"accountId": "A1"})
    await csb_post(csb, "account", {"accountId": ""})
    records = await recorded(csb)
    assert [r["status"] for r in records] == [200, 400]
    assert records[0]["headers"]["Authorization"] == "***"
    assert records[0]["json"] == {"accountId": "A1"}
    assert records[0]["query"] == {}
    assert CSB_KEY not in await (await csb.get("/_mock/requests")).text()


# ---------------------------------------------------------------- admin API


async def test_admin_requests_are_not_recorded_and_path_prefix_filters(csb: TestClient) -> None:
    await csb_post(csb, "account", {"accountId": "A1"})
    await csb_post(csb, "identify", {"accountId": "A1", "userId": "u1"})
    await state(csb)
    await csb.get("/_mock/faults")
    assert [r["path"] for r in await recorded(csb)] == ["/api_js/v1_1/account", "/api_js/v1_1/identify"]
    assert [r["path"] for r in await recorded(csb, path_prefix="/api_js/v1_1/id")] == ["/api_js/v1_1/identify"]
    assert await recorded(csb, path_prefix="/nothing") == []


async def test_delete_requests_clears_records_and_the_partner_view(cs: TestClient) -> None:
    await cs_post(cs)
    assert (await state(cs))["organizations"]
    response = await cs.delete("/_mock/requests")
    assert response.status == 200
    assert await recorded(cs) == []
    assert await state(cs) == {"organizations": {}}
    await cs_post(cs)  # still works afterwards
    assert len(await recorded(cs)) == 1


# ---------------------------------------------------------------- faults


async def test_fault_by_count_answers_the_next_n_requests_then_stops(cs: TestClient) -> None:
    faults = await add_fault(cs, status=503, count=2)
    assert [(f["status"], f["remaining"]) for f in faults] == [(503, 2)]
    statuses = [(await cs_post(cs)).status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r["status"] for r in await recorded(cs)] == [503, 503, 200]
    assert await (await cs.get("/_mock/faults")).json() == []
    # fault answers do not reach the partner state
    assert len((await state(cs))["organizations"]["o1"]["events"]) == 1


async def test_fault_answer_is_json_in_the_partner_shape(csb: TestClient) -> None:
    await add_fault(csb, status=500, count=1)
    response = await csb_post(csb, "account", {"accountId": "A1"})
    assert response.status == 500
    assert "error" in await response.json()
    assert (await state(csb))["accounts"] == {}


async def test_fault_with_share_one_and_retry_after(csb: TestClient) -> None:
    await add_fault(csb, status=429, share=1.0, retry_after=2)
    for _ in range(3):
        response = await csb_post(csb, "account", {"accountId": "A1"})
        assert response.status == 429
        assert response.headers["Retry-After"] == "2"
    assert (await state(csb))["accounts"] == {}
    assert [r["status"] for r in await recorded(csb)] == [429, 429, 429]


async def test_fault_with_share_zero_never_fires(csb: TestClient) -> None:
    await add_fault(csb, status=503, share=0)
    for _ in range(5):
        assert (await csb_post(csb, "account", {"accountId": "A1"})).status == 200


async def test_fault_with_share_half_fires_on_some_requests(csb: TestClient) -> None:
    await add_fault(csb, status=503, share=0.5)
    statuses = {(await csb_post(csb, "account", {"accountId": "A1"})).status for _ in range(60)}
    assert statuses == {200, 503}  # 2^-59 chance of a false failure


async def test_latency_fault_delays_every_partner_request_until_cleared(cs: TestClient) -> None:
    await add_fault(cs, latency_ms=200)
    for _ in range(2):
        started = time.monotonic()
        assert (await cs_post(cs)).status == 200
        assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    await state(cs)  # the admin API is not delayed
    assert time.monotonic() - started < 0.2
    assert (await cs.delete("/_mock/faults")).status == 200
    started = time.monotonic()
    assert (await cs_post(cs)).status == 200
    assert time.monotonic() - started < 0.2


async def test_latency_and_status_combine(csb: TestClient) -> None:
    await add_fault(csb, status=504, latency_ms=200, count=1)
    started = time.monotonic()
    response = await csb_post(csb, "account", {"accountId": "A1"})
    assert response.status == 504
    assert time.monotonic() - started >= 0.2


async def test_fault_path_prefix_limits_it_to_matching_paths(csb: TestClient) -> None:
    await add_fault(csb, status=503, path_prefix="/api_js/v1_1/track")
    assert (await csb_post(csb, "account", {"accountId": "A1"})).status == 200
    assert (await csb_post(csb, "track", {"accountId": "A1", "userId": "u", "event": "E"})).status == 503
    assert (await csb_post(csb, "page", {"accountId": "A1", "userId": "u"})).status == 200


async def test_stacked_faults_are_used_in_order(cs: TestClient) -> None:
    await add_fault(cs, status=503, count=1)
    faults = await add_fault(cs, status=429, count=1, retry_after=1)
    assert [f["status"] for f in faults] == [503, 429]
    first, second, third = [await cs_post(cs) for _ in range(3)]
    assert (first.status, second.status, third.status) == (503, 429, 200)
    assert "Retry-After" not in first.headers and second.headers["Retry-After"] == "1"


async def test_delete_faults_clears_them(csb: TestClient) -> None:
    await add_fault(csb, status=503)
    await add_fault(csb, latency_ms=100)
    response = await csb.delete("/_mock/faults")
    assert response.status == 200 and await response.json() == []
    assert (await csb_post(csb, "account", {"accountId": "A1"})).status == 200


@pytest.mark.parametrize(
    "fault",
    [{}, {"status": 99}, {"status": "503"}, {"status": 503, "count": 0}, {"status": 503, "share": 1.5},
     {"status": 503, "retry_after": -1}, {"latency_ms": -5}, {"status": 503, "retryAfter": 2}, [1]],
)
async def test_invalid_fault_is_400_and_adds_nothing(cs: TestClient, fault: Any) -> None:
    response = await cs.post("/_mock/faults", json=fault)
    assert response.status == 400
    assert (await response.json())["error"]
    assert await (await cs.get("/_mock/faults")).json() == []


# ---------------------------------------------------------------- running both


async def test_start_mocks_on_free_ports() -> None:
    mocks = await start_mocks(
        "127.0.0.1",
        {"clientsuccess": 0, "customersuccessbox": 0},
        {"CLIENTSUCCESS_SOURCE_ID": SOURCE, "CLIENTSUCCESS_API_KEY": CS_KEY, "CSB_API_KEY": CSB_KEY},
    )
    try:
        assert not mocks.urls["clientsuccess"].endswith(":0") and not mocks.urls["customersuccessbox"].endswith(":0")
        assert mocks.urls["clientsuccess"] != mocks.urls["customersuccessbox"]
        async with aiohttp.ClientSession() as session:
            url = mocks.urls["clientsuccess"] + cs_path("E")
            async with session.post(url, params={"api_key": CS_KEY}, json=cs_body()) as response:
                assert response.status == 200
            async with session.post(mocks.urls["customersuccessbox"] + "/api_js/v1_1/account", json={"accountId": "A"},
                                    headers=bearer()) as response:
                assert response.status == 200
            async with session.get(mocks.urls["customersuccessbox"] + "/_mock/state") as response:
                assert (await response.json())["accounts"] == {"A": {"traits": {}}}
    finally:
        await mocks.close()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(mocks.urls["customersuccessbox"] + "/_mock/state")


def test_credentials_from_env_with_demo_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIENTSUCCESS_SOURCE_ID", raising=False)
    monkeypatch.setenv("CLIENTSUCCESS_API_KEY", "")
    monkeypatch.setenv("CSB_API_KEY", "k3")
    creds = credentials_from_env()
    assert (creds["CLIENTSUCCESS_SOURCE_ID"], creds["CLIENTSUCCESS_API_KEY"], creds["CSB_API_KEY"]) == (
        "demo-source", "demo-cs-api-key", "k3",
    )


async def test_run_mocks_prints_urls_without_keys_and_stops_on_sigterm() -> None:
    env = dict(os.environ, CLIENTSUCCESS_SOURCE_ID="s9", CLIENTSUCCESS_API_KEY="cs-top-secret",
               CSB_API_KEY="csb-top-secret", PYTHONPATH=str(ROOT))
    code = "from mockservers.server import run_mocks; run_mocks('127.0.0.1', {'clientsuccess': 0, 'customersuccessbox': 0})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = [await asyncio.to_thread(proc.stdout.readline) for _ in range(2)]
        assert lines[0].startswith("ClientSuccess mock listening on http://127.0.0.1:")
        assert lines[1].startswith("CustomerSuccessBox mock listening on http://127.0.0.1:")
        csb_url = lines[1].split()[-1]
        async with aiohttp.ClientSession() as session:
            async with session.post(csb_url + "/api_js/v1_1/account", json={"accountId": "A"},
                                    headers=bearer("csb-top-secret")) as response:
                assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0, err
        printed = "".join(lines) + out + err
        assert "top-secret" not in printed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
