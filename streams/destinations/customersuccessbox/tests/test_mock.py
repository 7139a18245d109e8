"""The CustomerSuccessBox mock (mock.py): its JavaScript API's rules, its partner view, its recording."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.mockhelpers import CSB_KEY, bearer, csb, csb_post, recorded, state  # noqa: F401 (csb: fixture)


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
