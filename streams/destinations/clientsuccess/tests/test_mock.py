"""The ClientSuccess mock (mock.py): the Usage API's rules, its partner view, its recording."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.mockhelpers import CS_KEY, SOURCE, cs_body, cs_path, cs_post, recorded, state


async def test_cs_event_is_created_and_shows_in_the_partner_view(cs: aiohttp.ClientSession) -> None:
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


async def test_cs_event_id_is_url_decoded_even_with_a_slash(cs: aiohttp.ClientSession) -> None:
    response = await cs_post(cs, "Paid 50% / month & more")
    assert response.status == 200
    events = (await state(cs))["organizations"]["o1"]["events"]
    assert events[0]["event"] == "Paid 50% / month & more"


async def test_cs_organization_name_and_users_are_upserted(cs: aiohttp.ClientSession) -> None:
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
async def test_cs_unknown_source_or_key_is_401_without_echoing_the_key(
    cs: aiohttp.ClientSession, source: str, key: str
) -> None:
    response = await cs_post(cs, source=source, key=key)
    assert response.status == 401
    body = await response.json()
    assert body["created"] is False and body["error"]
    text = await response.text()
    assert CS_KEY not in text and (not key or key not in text)
    assert (await state(cs))["organizations"] == {}


async def test_cs_missing_api_key_is_401(cs: aiohttp.ClientSession) -> None:
    response = await cs.post(cs_path("E"), json=cs_body())
    assert response.status == 401


async def test_cs_auth_is_checked_before_the_body(cs: aiohttp.ClientSession) -> None:
    response = await cs_post(cs, body={"nonsense": True}, key="wrong")
    assert response.status == 401


@pytest.mark.parametrize(
    "body, expected",
    [
        ([1, 2], ["body must be a JSON object"]),
        ("text", ["body must be a JSON object"]),
        ({}, ["identity.organization.id", "identity.organization.name", "identity.user.id", "value is required"]),
        (
            {"identity": {"organization": {"id": "", "name": "N"}, "user": {"id": "u"}}, "value": 1},
            ["identity.organization.id"],
        ),
        (
            {"identity": {"organization": {"id": "o", "name": ""}, "user": {"id": "u"}}, "value": 1},
            ["identity.organization.name"],
        ),
        ({"identity": {"organization": {"id": "o"}, "user": {"id": "u"}}, "value": 1}, ["identity.organization.name"]),
        (
            {"identity": {"organization": {"id": "o", "name": "N"}, "user": {"id": " "}}, "value": 1},
            ["identity.user.id"],
        ),
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
    cs: aiohttp.ClientSession, body: Any, expected: list[str]
) -> None:
    response = await cs_post(cs, body=body)
    assert response.status == 422
    answer = await response.json()
    assert answer["created"] is False
    assert len(answer["errors"]) == len(expected)
    for fragment, error in zip(expected, answer["errors"], strict=True):
        assert fragment in error
    assert (await state(cs))["organizations"] == {}


async def test_cs_body_that_is_not_json_is_422(cs: aiohttp.ClientSession) -> None:
    response = await cs_post(cs, json=None, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status == 422
    assert (await response.json())["errors"] == ["body must be a JSON object"]


@pytest.mark.parametrize("timestamp", ["2026-11-01T10:00:00Z", "2026-11-01T10:00:00.123+02:00", "2026-11-01"])
async def test_cs_iso8601_timestamps_are_accepted(cs: aiohttp.ClientSession, timestamp: str) -> None:
    assert (await cs_post(cs, body=cs_body(timestamp=timestamp))).status == 200


@pytest.mark.parametrize(
    "method, path", [("POST", "/segment/1.0.0/direct"), ("GET", "/"), ("POST", "/collector/1.0.0/x")]
)
async def test_cs_other_paths_are_404_json(cs: aiohttp.ClientSession, method: str, path: str) -> None:
    response = await cs.request(method, path, json={})
    assert response.status == 404
    assert (await response.json())["created"] is False


async def test_cs_wrong_method_on_the_event_path_is_a_json_error(cs: aiohttp.ClientSession) -> None:
    response = await cs.get(cs_path("E"), params={"api_key": CS_KEY})
    assert response.status == 405
    assert (await response.json())["created"] is False


async def test_cs_requests_are_recorded_with_the_key_redacted(cs: aiohttp.ClientSession) -> None:
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
