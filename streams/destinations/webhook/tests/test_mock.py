"""The webhook receiver's imitation: signature check, body check, recording and state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.destinations.webhook import PLUGIN, signature
from streams.destinations.webhook.mock import create_app, from_env
from streams.testing.mocks import DEMO_CREDENTIALS

SECRET = "mock-test-secret"


@pytest.fixture
async def signed() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(SECRET))) as client:
        yield client


@pytest.fixture
async def unsigned() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(""))) as client:
        yield client


def seg(type_: str, user: str = "u1", n: int = 1, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "userId": user, "messageId": f"{type_}-{user}-{n}", **fields}


async def post(
    client: TestClient, body: Any, secret: str | None = SECRET, sig: str | None = None, raw: bytes | None = None
):
    data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if sig is not None:
        headers["X-Signature"] = sig
    elif secret is not None:
        headers["X-Signature"] = signature.sign(secret, data)
    response = await client.post("/webhook", data=data, headers=headers)
    return response.status, await response.json()


async def state(client: TestClient) -> dict[str, Any]:
    return await (await client.get("/_mock/state")).json()


async def records(client: TestClient) -> list[dict[str, Any]]:
    return await (await client.get("/_mock/requests")).json()


async def test_a_signed_message_is_accepted_and_recorded(signed: TestClient):
    assert await post(signed, seg("track", event="E")) == (200, {"ok": True})
    [record] = await records(signed)
    assert (record["method"], record["path"], record["status"]) == ("POST", "/webhook", 200)
    assert record["json"] == seg("track", event="E")
    assert record["headers"]["X-Signature"]


@pytest.mark.parametrize("sig", ["", "0" * 40, "not-hex", None])
async def test_a_missing_or_wrong_signature_is_401_and_not_kept(signed: TestClient, sig):
    body = seg("track", event="E")
    if sig is None:
        status, answer = await post(signed, body, secret=None)
    else:
        status, answer = await post(signed, body, sig=sig)
    assert status == 401
    assert answer == {"ok": False, "error": "missing or invalid X-Signature"}
    assert (await state(signed))["messages"] == []
    assert [r["status"] for r in await records(signed)] == [401]


async def test_a_signature_with_another_secret_or_over_other_bytes_is_401(signed: TestClient):
    data = json.dumps(seg("identify")).encode()
    assert (await post(signed, None, raw=data, sig=signature.sign("other", data)))[0] == 401
    assert (await post(signed, None, raw=data + b" ", sig=signature.sign(SECRET, data)))[0] == 401
    assert (await post(signed, None, raw=data, sig=signature.sign(SECRET, data)))[0] == 200


async def test_without_a_secret_any_request_is_taken(unsigned: TestClient):
    assert (await post(unsigned, seg("page", name="P"), secret=None))[0] == 200
    assert (await post(unsigned, seg("page", name="Q"), sig="anything"))[0] == 200
    assert len((await state(unsigned))["messages"]) == 2


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"not json", "body must be a JSON object"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"event": "E"}', "type must be one of alias, group, identify, page, screen, track"),
        (b'{"type": "purchase"}', "type must be one of alias, group, identify, page, screen, track"),
    ],
)
async def test_a_body_that_is_not_a_segment_message_is_400(signed: TestClient, raw: bytes, error: str):
    assert await post(signed, None, raw=raw) == (400, {"ok": False, "error": error})
    assert (await state(signed))["messages"] == []


async def test_the_signature_is_checked_before_the_body(signed: TestClient):
    assert (await post(signed, None, raw=b"not json", sig="bad"))[0] == 401


async def test_other_paths_and_methods_are_json_errors(signed: TestClient):
    response = await signed.post("/elsewhere", data=b"{}")
    assert response.status == 404 and (await response.json())["ok"] is False
    response = await signed.get("/webhook")
    assert response.status == 405 and (await response.json())["ok"] is False


async def test_state_lists_messages_in_order_by_type_and_by_user(signed: TestClient):
    sent = [
        seg("identify", "u1", 1),
        seg("track", "u1", 2, event="E"),
        {"type": "page", "anonymousId": "anon-9", "messageId": "page-anon-9"},
        seg("track", "u2", 3, event="F"),
    ]
    for body in sent:
        assert (await post(signed, body))[0] == 200
    view = await state(signed)
    assert [entry["message"] for entry in view["messages"]] == sent
    assert all(entry["received_at"].endswith("Z") for entry in view["messages"])
    assert view["by_type"] == {
        "identify": ["identify-u1-1"],
        "track": ["track-u1-2", "track-u2-3"],
        "page": ["page-anon-9"],
    }
    assert view["by_user"] == {
        "u1": [{"type": "identify", "messageId": "identify-u1-1"}, {"type": "track", "messageId": "track-u1-2"}],
        "anon-9": [{"type": "page", "messageId": "page-anon-9"}],
        "u2": [{"type": "track", "messageId": "track-u2-3"}],
    }
    cleared = await signed.delete("/_mock/requests")
    assert (await cleared.json())["cleared"] == 4
    assert (await state(signed)) == {"messages": [], "by_type": {}, "by_user": {}}


async def test_an_injected_fault_answers_instead(signed: TestClient):
    await signed.post("/_mock/faults", json={"status": 503, "count": 1})
    assert (await post(signed, seg("track", event="E")))[0] == 503
    assert (await post(signed, seg("track", event="E")))[0] == 200


async def test_from_env_uses_the_workers_variable_and_the_demo_secret():
    assert PLUGIN.mock.demo_env == {"WEBHOOK_SHARED_SECRET": "demo-webhook-secret"}
    async with TestClient(TestServer(from_env(DEMO_CREDENTIALS))) as client:
        assert (await post(client, seg("alias", previousId="a"), secret="demo-webhook-secret"))[0] == 200
        assert (await post(client, seg("alias", previousId="a"), secret=SECRET))[0] == 401
    async with TestClient(TestServer(from_env({"WEBHOOK_SHARED_SECRET": ""}))) as client:
        assert (await post(client, seg("alias", previousId="a"), secret=None))[0] == 200


def test_the_worker_is_pointed_at_the_mocks_path():
    env = PLUGIN.mock.worker_env("http://127.0.0.1:8083/", {})
    assert env == {"WEBHOOK_URL": "http://127.0.0.1:8083/webhook", "WEBHOOK_SHARED_SECRET": "demo-webhook-secret"}
