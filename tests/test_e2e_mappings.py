"""End to end through Kafka, a worker process and the mocks: a mapping file
(CS_RELAY_MAPPINGS) that renames, drops (deny) and collapses pages (single) reaches each
partner as configured; a refused event is counted as skipped, never dead-lettered."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pipeline import Pipeline, Worker

pytestmark = pytest.mark.e2e

MAPPINGS = """\
[clientsuccess]
deny = ["Debug *"]
rename = { "Order Completed" = "Purchase" }
pages = "single"
value_property = "revenue"

[customersuccessbox]
pages = "single"
trait_renames = { "plan_name" = "plan" }

[webhook]
deny = ["Debug *"]
screens = "off"
"""
USER = "map-user"


def seg(type_: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "userId": USER, "messageId": f"map-{n}", "timestamp": f"2026-11-30T10:{n:02d}:00Z", **fields}


def cs_event(record: dict[str, Any]) -> str:
    return unquote(record["path"].rsplit("/", 1)[-1])


async def skipped(worker: Worker, destination: str) -> float | None:
    """`cs_relay_skipped_total` of `destination` on the worker (None while it does not answer)."""
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{worker.web_port}/metrics") as response:
                text = await response.text()
    except aiohttp.ClientConnectionError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cs_relay_skipped_total" and sample.labels.get("destination") == destination:
                return sample.value
    return 0.0


async def test_a_mapping_file_renames_drops_and_collapses_pages_at_every_partner(pipeline: Pipeline, tmp_path):
    path = tmp_path / "mappings.toml"
    path.write_text(MAPPINGS)
    worker = pipeline.start_worker(CS_RELAY_MAPPINGS=str(path))
    await pipeline.send(
        seg("group", 1, groupId="acme", traits={"name": "Acme", "plan_name": "pro"}),
        seg("identify", 2, traits={"email": "ann@acme.example", "plan_name": "pro"}),
        seg("track", 3, event="Debug Ping"),
        seg("track", 4, event="Order Completed", properties={"revenue": 49.5, "value": 2}),
        seg("page", 5, name="Pricing", properties={"path": "/pricing"}),
        seg("page", 6, name="Docs"),
        seg("screen", 7, name="Home"),
        seg("track", 8, event="Signed Out"),  # the last: each partner's requests are in order
    )

    cs = await pipeline.eventually(
        pipeline.cs_requests, lambda r: any(cs_event(x) == "Signed Out" for x in r), what="ClientSuccess's last event"
    )
    assert [cs_event(r) for r in cs] == ["Purchase", "Page Viewed", "Page Viewed", "Signed Out"]
    assert [r["json"]["value"] for r in cs] == [49.5, 1, 1, 1]

    def csb_done(records):
        return any((r["json"] or {}).get("event") == "Signed Out" for r in records)

    csb = await pipeline.eventually(pipeline.csb_requests, csb_done, what="CustomerSuccessBox's last call")
    assert [(r["path"].rsplit("/", 1)[-1], r["json"].get("event")) for r in csb] == [
        ("account", None),
        ("identify", None),
        ("track", "Debug Ping"),
        ("track", "Order Completed"),
        ("track", "Page Viewed"),
        ("track", "Page Viewed"),
        ("track", "Signed Out"),
    ]
    assert csb[0]["json"]["traits"] == {"name": "Acme", "plan": "pro"}
    assert csb[1]["json"]["traits"] == {"email": "ann@acme.example", "plan": "pro"}
    assert [r["json"]["properties"].get("name") for r in csb[4:6]] == ["Pricing", "Docs"]

    def webhook_done(records):
        return any((r["json"] or {}).get("event") == "Signed Out" for r in records)

    hooks = await pipeline.eventually(
        lambda: pipeline.requests("webhook"), webhook_done, what="the webhook's last call"
    )
    assert [(r["json"]["type"], r["json"].get("event") or r["json"].get("name")) for r in hooks] == [
        ("group", None),
        ("identify", None),
        ("track", "Order Completed"),
        ("page", "Pricing"),
        ("page", "Docs"),
        ("track", "Signed Out"),
    ]
    assert hooks[0]["json"]["traits"] == {"name": "Acme", "plan_name": "pro"}  # no trait_renames for the webhook

    # refused by deny (and the webhook's screen, off): skipped, counted, never dead letters
    assert (
        await pipeline.eventually(
            lambda: skipped(worker, "webhook"), lambda n: n is not None and n >= 2, what="the webhook's skips counted"
        )
        == 2
    )
    # ClientSuccess: Debug Ping (deny), the screen (its own rule), identify and group (state only)
    assert await skipped(worker, "clientsuccess") == 4
    assert await pipeline.dead_letters() == []
