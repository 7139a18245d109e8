"""End to end through Kafka, a worker process and the mocks: consent categories in the
mapping file (CS_RELAY_MAPPINGS). A category a call denies reaches nothing of that call
at the destinations that name it, the others get everything, and the skips are counted
apart in /status."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from tests.pipeline import Pipeline, Worker

pytestmark = pytest.mark.e2e

MAPPINGS = """\
[clientsuccess]
consent = ["analytics"]

[customersuccessbox]
consent = ["analytics", "advertising"]
"""
USER = "consent-user"


def seg(type_: str, n: int, prefs: dict[str, bool] | None = None, **fields: Any) -> dict[str, Any]:
    context = {"consent": {"categoryPreferences": prefs}} if prefs is not None else {}
    return {"type": type_, "userId": USER, "messageId": f"c-{n}", "context": context, **fields}


async def status(worker: Worker) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{worker.web_port}/status") as response:
            return json.loads(await response.text())


async def test_a_denied_category_reaches_nothing_the_others_everything(pipeline: Pipeline, tmp_path):
    path = tmp_path / "mappings.toml"
    path.write_text(MAPPINGS)
    worker = pipeline.start_worker(CS_RELAY_MAPPINGS=str(path))
    both = {"analytics": True, "advertising": True}
    await pipeline.send(
        seg("group", 1, both, groupId="acme", traits={"name": "Acme"}),
        seg("identify", 2, both, traits={"email": "old@example.com"}),
        seg("identify", 3, {"analytics": False, "advertising": False}, traits={"email": "secret@example.com"}),
        seg("track", 4, {"analytics": True, "advertising": False}, event="Analytics Only"),
        seg("track", 5, {}, event="Empty Preferences"),
        seg("track", 6, None, event="No Consent Object"),
        seg("track", 7, both, event="Last"),
    )

    def done(records: list[dict[str, Any]]) -> bool:
        return any("Last" in json.dumps(r.get("json")) + r["path"] for r in records)

    cs = await pipeline.eventually(pipeline.cs_requests, done, what="ClientSuccess's last event")
    csb = await pipeline.eventually(pipeline.csb_requests, done, what="CustomerSuccessBox's last event")
    hooks = await pipeline.eventually(lambda: pipeline.requests("webhook"), done, what="the webhook's last call")
    assert [unquote(r["path"].rsplit("/", 1)[-1]) for r in cs] == ["Analytics Only", "No Consent Object", "Last"]
    assert [r["json"].get("event") for r in csb if r["path"].endswith("/track")] == ["No Consent Object", "Last"]
    # the denied identify's email reached neither: each still sees the one it was sent
    assert cs[-1]["json"]["identity"]["user"]["email"] == "old@example.com"
    assert [r["json"]["traits"]["email"] for r in csb if r["path"].endswith("/identify")] == ["old@example.com"]
    assert "secret@example.com" not in json.dumps(cs) + json.dumps(csb)
    # the webhook names no category: everything, the denied calls included
    assert [r["json"]["messageId"] for r in hooks] == [f"c-{n}" for n in range(1, 8)]
    counts = {k: d["skipped_for_consent"] for k, d in (await status(worker))["destinations"].items()}
    assert counts == {"clientsuccess": 2, "customersuccessbox": 3, "webhook": 0}
