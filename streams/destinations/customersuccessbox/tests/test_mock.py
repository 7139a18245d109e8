"""The CustomerSuccessBox mock (mock.py): its JavaScript API's rules, its partner view, its recording."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.destinations.customersuccessbox import mock
from tests.mockhelpers import CSB_KEY, bearer, csb_post, recorded, state

# The mock's clock in these tests: the day a call is received is fixed, so the same-day
# rule is tested on both sides of a GMT midnight without waiting for one.
RECEIVED = datetime(2026, 11, 30, 0, 0, 5, tzinfo=UTC)
TODAY_NOON = "2026-11-30T12:00:00Z"


@pytest.fixture
async def csb_at() -> AsyncIterator[TestClient]:
    """The mock, receiving every call at `RECEIVED`."""
    async with TestClient(TestServer(mock.create_app(CSB_KEY, clock=lambda: RECEIVED))) as client:
        yield client


def feature(**overrides: Any) -> dict[str, Any]:
    body = {
        "type": "feature",
        "accountId": "A1",
        "userId": "u1",
        "productId": "analytics",
        "moduleId": "reports",
        "featureId": "Report Built",
        "total": 1,
        "timestamp": "2026-11-30T00:00:01Z",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_csb_calls_build_the_partner_view(csb_at: TestClient) -> None:
    csb = csb_at
    long_id = "p" * 80
    calls = [
        ("account", {"type": "account", "accountId": "A1", "traits": {"name": "Acme", "plan": "free"}}),
        ("account", {"type": "account", "accountId": "A1", "traits": {"plan": "pro"}}),
        ("identify", {"type": "user", "accountId": "A1", "userId": "u1", "traits": {"email": "a@x"}}),
        ("identify", {"type": "user", "accountId": "A1", "userId": "u1", "traits": {"vip": True}}),
        (
            "track",
            {
                "type": "track",
                "accountId": "A1",
                "userId": "u1",
                "event": "Ordered",
                "properties": {"cost": 3},
                "timestamp": "2026-11-01T00:00:00Z",
            },
        ),
        (
            "feature",
            {
                "type": "feature",
                "accountId": "A1",
                "userId": "u1",
                "productId": long_id,
                "moduleId": "m1",
                "featureId": "Ordered",
                "total": 2,
                "timestamp": TODAY_NOON,
            },
        ),
        (
            "feature",
            {
                "type": "feature",
                "accountId": "A1",
                "userId": "u1",
                "productId": long_id,
                "moduleId": "m1",
                "featureId": "Ordered",
                "timestamp": TODAY_NOON,
            },
        ),
        (
            "page",
            {
                "type": "page",
                "accountId": "A1",
                "userId": "u1",
                "name": "Orders",
                "properties": {"path": "/o"},
                "timestamp": "2026-11-02T00:00:00Z",
            },
        ),
    ]
    for endpoint, body in calls:
        response = await csb_post(csb, endpoint, body)
        assert response.status == 200, await response.text()
        assert await response.json() == {"status": "ok"}

    view = await state(csb)
    assert view["accounts"] == {"A1": {"traits": {"name": "Acme", "plan": "pro"}}}
    assert view["users"] == {"A1": {"u1": {"traits": {"email": "a@x", "vip": True}}}}
    [event] = view["events"]
    assert {k: event[k] for k in ("accountId", "userId", "event", "properties", "timestamp")} == {
        "accountId": "A1",
        "userId": "u1",
        "event": "Ordered",
        "properties": {"cost": 3},
        "timestamp": "2026-11-01T00:00:00Z",
    }
    assert view["features"] == {"A1": {"p" * 64: {"m1": {"Ordered": 3}}}}  # cut to 64; total 2, then 1 by default
    assert event["received_at"].endswith("Z")
    [page] = view["pages"]
    assert {k: page[k] for k in ("accountId", "userId", "name", "properties", "timestamp")} == {
        "accountId": "A1",
        "userId": "u1",
        "name": "Orders",
        "properties": {"path": "/o"},
        "timestamp": "2026-11-02T00:00:00Z",
    }


@pytest.mark.parametrize("endpoint", ["identify", "track", "page"])
async def test_csb_call_for_an_unseen_account_upserts_it(csb: aiohttp.ClientSession, endpoint: str) -> None:
    body = {"accountId": "NEW", "userId": "u9", "event": "E"}
    assert (await csb_post(csb, endpoint, body)).status == 200
    view = await state(csb)
    assert view["accounts"] == {"NEW": {"traits": {}}}
    assert view["users"] == {"NEW": {"u9": {"traits": {}}}}


async def test_csb_basic_auth_with_the_key_as_user_name_is_accepted(csb: aiohttp.ClientSession) -> None:
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
async def test_csb_missing_or_wrong_key_is_401(csb: aiohttp.ClientSession, headers: dict[str, str]) -> None:
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
        ("feature", {}, ["accountId", "userId", "productId", "moduleId", "featureId", "timestamp is required"]),
        (
            "feature",
            {
                "accountId": "A",
                "userId": "u",
                "productId": "",
                "moduleId": " ",
                "featureId": None,
                "timestamp": "yesterday",
            },
            ["productId", "moduleId", "featureId", "ISO-8601"],
        ),
        ("identify", {"type": "identify", "accountId": "A", "userId": "u"}, ['type must be "user" on /identify']),
        ("track", {"type": "feature", "accountId": "A", "userId": "u", "event": "E"}, ['type must be "track"']),
        ("account", {"type": "user", "accountId": "A"}, ['type must be "account"']),
        ("page", {"type": "track", "accountId": "A", "userId": "u"}, ['type must be "page"']),
        (
            "feature",
            {
                "type": "track",
                "accountId": "A",
                "userId": "u",
                "productId": "p",
                "moduleId": "m",
                "featureId": "f",
                "timestamp": "2026-11-30T00:00:00Z",
            },
            ['type must be "feature"'],
        ),
        ("track", {"accountId": "A", "userId": "u", "event": "E", "timestamp": "30/11/2026"}, ["ISO-8601"]),
    ],
)
async def test_csb_invalid_body_is_400_listing_every_problem(
    csb_at: TestClient, endpoint: str, body: Any, expected: list[str]
) -> None:
    csb = csb_at
    response = await csb_post(csb, endpoint, body)
    assert response.status == 400
    errors = (await response.json())["errors"]
    assert len(errors) == len(expected)
    for fragment, error in zip(expected, errors, strict=True):
        assert fragment in error
    assert await state(csb) == {"accounts": {}, "users": {}, "events": [], "pages": [], "features": {}}


async def test_csb_body_that_is_not_json_is_400(csb: aiohttp.ClientSession) -> None:
    response = await csb.post("/api_js/v1_1/track", data=b"{oops", headers=bearer())
    assert response.status == 400
    assert (await response.json())["errors"] == ["body must be a JSON object"]


@pytest.mark.parametrize("path", ["/api_js/v1_1/group", "/api_js/v1_1/", "/api/v1/track", "/"])
async def test_csb_unknown_path_is_404_json(csb: aiohttp.ClientSession, path: str) -> None:
    response = await csb.post(path, json={"accountId": "A"}, headers=bearer())
    assert response.status == 404
    assert "error" in await response.json()


async def test_csb_requests_are_recorded_with_authorization_redacted(csb: aiohttp.ClientSession) -> None:
    await csb_post(csb, "account", {"accountId": "A1"})
    await csb_post(csb, "account", {"accountId": ""})
    records = await recorded(csb)
    assert [r["status"] for r in records] == [200, 400]
    assert records[0]["headers"]["Authorization"] == "***"
    assert records[0]["json"] == {"accountId": "A1"}
    assert records[0]["query"] == {}
    assert CSB_KEY not in await (await csb.get("/_mock/requests")).text()


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-30T00:00:00Z",
        "2026-11-30T23:59:59.999Z",
        "2026-11-30T00:00:01",  # no offset: read as UTC
        "2026-11-29T20:00:00-05:00",  # 01:00 GMT on the 30th
    ],
)
async def test_csb_feature_of_the_gmt_day_it_is_received_is_counted(csb_at: TestClient, timestamp: str) -> None:
    response = await csb_post(csb_at, "feature", feature(timestamp=timestamp, total=None))
    assert response.status == 200, await response.text()
    assert (await state(csb_at))["features"] == {"A1": {"analytics": {"reports": {"Report Built": 1}}}}


@pytest.mark.parametrize(
    "timestamp, day",
    [
        ("2026-11-29T23:59:59Z", "2026-11-29"),
        ("2026-11-30T01:00:00+02:00", "2026-11-29"),  # 23:00 GMT the day before
        ("2026-12-01T00:00:00Z", "2026-12-01"),
        ("2026-11-18T11:30:06Z", "2026-11-18"),
    ],
)
async def test_csb_feature_not_of_the_gmt_day_it_is_received_is_400_naming_the_rule(
    csb_at: TestClient, timestamp: str, day: str
) -> None:
    response = await csb_post(csb_at, "feature", feature(timestamp=timestamp))
    assert response.status == 400
    [error] = (await response.json())["errors"]
    assert day in error and "2026-11-30" in error and mock.SAME_DAY_RULE in error
    assert (await state(csb_at))["features"] == {}


async def test_csb_same_day_rule_is_for_features_only(csb_at: TestClient) -> None:
    old = "2026-11-18T11:30:06Z"
    for endpoint, body in [
        ("account", {"type": "account", "accountId": "A1", "timestamp": old}),
        ("identify", {"type": "user", "accountId": "A1", "userId": "u1", "timestamp": old}),
        ("track", {"type": "track", "accountId": "A1", "userId": "u1", "event": "E", "timestamp": old}),
        ("page", {"type": "page", "accountId": "A1", "userId": "u1", "name": "P", "timestamp": old}),
    ]:
        assert (await csb_post(csb_at, endpoint, body)).status == 200, endpoint


@pytest.mark.parametrize(
    "total, accepted", [(0, True), (5, True), (-1, False), ("3", False), (True, False), (1.5, False), (None, True)]
)
async def test_csb_feature_total_is_an_integer_of_at_least_zero(csb_at: TestClient, total: Any, accepted: bool) -> None:
    response = await csb_post(csb_at, "feature", feature(total=total))
    assert (response.status == 200) is accepted
    counted = (await state(csb_at))["features"]
    if accepted:
        assert counted == {"A1": {"analytics": {"reports": {"Report Built": 1 if total is None else total}}}}
    else:
        assert counted == {} and "total" in (await response.json())["errors"][0]


async def test_csb_feature_totals_add_up_per_account_product_module_and_feature(csb_at: TestClient) -> None:
    for body in [
        feature(total=2),
        feature(total=3),
        feature(featureId="Report Shared"),
        feature(accountId="A2"),
        feature(userId="u2", moduleId="alerts"),
    ]:
        assert (await csb_post(csb_at, "feature", body)).status == 200
    view = await state(csb_at)
    assert view["features"] == {
        "A1": {"analytics": {"reports": {"Report Built": 5, "Report Shared": 1}, "alerts": {"Report Built": 1}}},
        "A2": {"analytics": {"reports": {"Report Built": 1}}},
    }
    assert view["users"] == {"A1": {"u1": {"traits": {}}, "u2": {"traits": {}}}, "A2": {"u1": {"traits": {}}}}
    assert view["events"] == []
