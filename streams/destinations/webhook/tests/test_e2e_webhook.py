"""End to end through the real broker, a worker process and the webhook's mock over HTTP:
both modes of WEBHOOK_WAIT_FOR_GROUP, the signature a Segment receiver checks, and the
shared delivery rules (a refusal becomes a dead letter for `webhook`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest

from streams import __version__
from tests.pipeline import Pipeline, Worker, open_pipeline

pytestmark = pytest.mark.e2e

DEMO_SECRET = "demo-webhook-secret"  # the plugin's demo_env: the mock and the worker share it
ACME_GROUP = {"id": "acme", "name": "Acme", "traits": {"name": "Acme", "plan": "pro"}}


def seg(type_: str, user: str, n: int, **fields: Any) -> dict[str, Any]:
    """A Segment message with a stable messageId and timestamp."""
    return {
        "type": type_,
        "userId": user,
        "messageId": f"{type_}-{user}-{n}",
        "timestamp": f"2026-11-30T10:{n:02d}:00Z",
        **fields,
    }


def of_user(user: str):
    async def probe(pipeline: Pipeline) -> list[dict[str, Any]]:
        return [r for r in await pipeline.requests("webhook") if (r["json"] or {}).get("userId") == user]

    return probe


def signed_as_segment_signs(record: dict[str, Any], secret: str = DEMO_SECRET) -> bool:
    """The recorded X-Signature is the hex HMAC-SHA1 of the body the worker sent (its
    compact UTF-8 JSON, which the recorded JSON re-encodes to exactly)."""
    body = json.dumps(record["json"], separators=(",", ":"), ensure_ascii=False).encode()
    return record["headers"].get("X-Signature") == hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


async def webhook_pending(worker: Worker, user: str) -> dict[str, Any] | None:
    """The user's webhook queue on the worker (GET /pending/{user}), empty when it has
    none; None while the worker does not answer for the user."""
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{worker.web_port}/pending/{user}") as response:
                if response.status != 200:
                    return None
                queue = (await response.json())["queues"].get("webhook")
                return queue or {"held": [], "releasing": [], "parked": []}
    except aiohttp.ClientConnectionError:
        return None


async def test_by_default_every_call_is_sent_at_once_signed_with_the_group_once_known(pipeline: Pipeline):
    pipeline.start_worker()
    user = "wh-now"
    requests = of_user(user)
    first = seg("track", user, 1, event="Signed Up", properties={"plan": "Café ☕"}, context={"ip": "10.0.0.1"})
    await pipeline.send(first)
    got = await pipeline.eventually(
        lambda: requests(pipeline), lambda r: len(r) >= 1, what="the track before any group"
    )
    # no group yet: the message exactly as sent, nothing added
    assert got[0]["json"] == first
    assert (got[0]["method"], got[0]["path"], got[0]["status"]) == ("POST", "/webhook", 200)
    assert got[0]["headers"]["Content-Type"] == "application/json"
    assert got[0]["headers"]["User-Agent"] == f"cs-relay/{__version__}"
    assert signed_as_segment_signs(got[0])

    await pipeline.send(
        seg("group", user, 2, groupId="acme", traits={"name": "Acme", "plan": "pro"}),
        seg("track", user, 3, event="Switched Off", integrations={"Webhooks": False}),
        seg("page", user, 4, name="Pricing"),
        seg("screen", user, 5, name="Home"),
        seg("identify", user, 6, traits={"email": "a@acme.example"}),
        seg("alias", user, 7, previousId="anon-7"),
    )
    got = await pipeline.eventually(lambda: requests(pipeline), lambda r: len(r) >= 6, what="six webhook calls")
    assert [r["json"]["messageId"] for r in got] == [
        f"track-{user}-1",
        f"group-{user}-2",
        f"page-{user}-4",
        f"screen-{user}-5",
        f"identify-{user}-6",
        f"alias-{user}-7",
    ]  # in order, without the call whose integrations switch Webhooks off
    for record in got[1:]:
        assert record["json"]["context"] == {"groupId": "acme", "group": ACME_GROUP}
        assert record["status"] == 200 and signed_as_segment_signs(record)
    state = await pipeline.state("webhook")
    assert [m["type"] for m in state["by_user"][user]] == ["track", "group", "page", "screen", "identify", "alias"]


async def test_waiting_for_the_group_holds_tracks_until_the_group_call_then_sends_in_order(pipeline: Pipeline):
    worker = pipeline.start_worker(WEBHOOK_WAIT_FOR_GROUP="true")
    user = "wh-wait"
    requests = of_user(user)
    early = [
        seg("track", user, 1, event="Opened"),
        seg("page", user, 2, name="Docs"),
        seg("screen", user, 3, name="Settings"),
        seg("identify", user, 4, traits={"firstName": "Ada"}),  # waits behind them, to keep the order
    ]
    await pipeline.send(*early)
    queue = await pipeline.eventually(
        lambda: webhook_pending(worker, user),
        lambda q: q is not None and len(q["held"]) == 4,
        what="four calls held for the webhook",
    )
    assert queue is not None  # what `eventually` waited for
    assert [json.loads(item["raw"])["messageId"] for item in queue["held"]] == [m["messageId"] for m in early]
    assert await requests(pipeline) == []  # held, not sent

    await pipeline.send(
        seg("group", user, 5, groupId="acme", traits={"name": "Acme", "plan": "pro"}),
        seg("track", user, 6, event="Later"),
    )
    got = await pipeline.eventually(lambda: requests(pipeline), lambda r: len(r) >= 6, what="six webhook calls")
    assert [r["json"]["messageId"] for r in got] == [
        f"{m['type']}-{user}-{n}" for n, m in enumerate([*early, {"type": "group"}, {"type": "track"}], 1)
    ]
    for record in got:
        assert record["json"]["context"] == {"groupId": "acme", "group": ACME_GROUP}
        assert record["status"] == 200 and signed_as_segment_signs(record)  # the mock verified the signature
    assert [r["json"].get("event") for r in got if r["json"]["type"] == "track"] == ["Opened", "Later"]
    emptied = await pipeline.eventually(
        lambda: webhook_pending(worker, user),
        lambda q: q is not None and not q["held"] and not q["releasing"],
        what="the webhook queue emptied",
    )
    assert emptied is not None  # what `eventually` waited for
    assert emptied["parked"] == []


async def test_without_a_secret_requests_are_unsigned_and_a_refusal_is_a_webhook_dead_letter(kafka_bootstrap, tmp_path):
    pipeline = await open_pipeline(kafka_bootstrap, tmp_path, mock_credentials={"WEBHOOK_SHARED_SECRET": ""})
    try:
        user = "wh-plain"
        requests = of_user(user)
        await pipeline.fault("webhook", status=422, count=1)
        pipeline.start_worker(
            WEBHOOK_HEADERS=json.dumps({"X-Receiver-Token": "receiver-token-1"}), CS_RELAY_QUICK_RETRIES="0"
        )
        await pipeline.send(seg("track", user, 1, event="Refused"), seg("track", user, 2, event="Taken"))
        got = await pipeline.eventually(lambda: requests(pipeline), lambda r: len(r) >= 2, what="two webhook calls")
        assert [(r["json"]["event"], r["status"]) for r in got] == [("Refused", 422), ("Taken", 200)]
        for record in got:
            assert "X-Signature" not in record["headers"]
            assert record["headers"]["X-Receiver-Token"] == "receiver-token-1"
        letters = await pipeline.eventually(
            pipeline.dead_letters,
            lambda d: any(h.get("cs-relay-destination") == "webhook" for _, h in d),
            what="the refused call dead-lettered",
        )
        [(value, headers)] = [(v, h) for v, h in letters if h.get("cs-relay-destination") == "webhook"]
        assert json.loads(value)["messageId"] == f"track-{user}-1"
        assert (headers["cs-relay-reason"], headers["cs-relay-stage"], headers["cs-relay-status"]) == (
            "partner_refused",
            "delivery",
            "422",
        )
    finally:
        await pipeline.close()
