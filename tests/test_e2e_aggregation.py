"""End to end through Kafka, worker processes and the mocks: windowed aggregation
(`aggregate` in the mapping file) over 15-second windows (the shortest that leaves a
worker's restart room inside one), with the worker restarted in
the middle of a window. The counts survive the restart (the `windows` table's
changelog), the window is sent once when it closes, and the totals are exact: the sum of
ClientSuccess's `value`s and of CustomerSuccessBox's feature `total`s."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from tests.pipeline import Pipeline

pytestmark = pytest.mark.e2e

WINDOW = 15
MAPPINGS = f"""\
[clientsuccess]
aggregate = "{WINDOW}s"

[customersuccessbox]
aggregate = "{WINDOW}s"
"""
USER = "agg-user"


def seg(type_: str, n: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "userId": USER, "messageId": f"agg-{n}", **fields}


def export(n: int) -> dict[str, Any]:
    return seg("track", f"export-{n}", event="Export", properties={"value": n})


def feature(n: int) -> dict[str, Any]:
    return seg("track", f"feature-{n}", event="Run Report", properties={"product_id": "app", "module_id": "reports"})


def marker(n: int) -> dict[str, Any]:
    return seg("track", f"marker-{n}", event=f"Marker {n}")  # a CustomerSuccessBox track: sent at once


def cs_event(record: dict[str, Any]) -> str:
    return unquote(record["path"].rsplit("/", 1)[-1])


async def until_csb(pipeline: Pipeline, event: str, what: str) -> list[dict[str, Any]]:
    return await pipeline.eventually(
        pipeline.csb_requests, lambda rs: any((r["json"] or {}).get("event") == event for r in rs), what=what
    )


async def test_aggregated_totals_survive_a_restart_in_the_middle_of_the_window(pipeline: Pipeline, tmp_path):
    path = tmp_path / "mappings.toml"
    path.write_text(MAPPINGS)
    worker = pipeline.start_worker(CS_RELAY_MAPPINGS=str(path))
    await pipeline.send(
        seg("group", "g", groupId="acme", traits={"name": "Acme"}),
        seg("identify", "i", traits={"email": "ann@acme.example"}),
        marker(0),
    )
    await until_csb(pipeline, "Marker 0", "the first worker routing")

    # start at the beginning of a window, so that the restart falls in its middle
    while time.time() % WINDOW > 2:
        await asyncio.sleep(0.2)
    window_end = time.time() // WINDOW * WINDOW + WINDOW

    await pipeline.send(*[export(n) for n in range(1, 6)], *[feature(n) for n in range(1, 4)], marker(1))
    await until_csb(pipeline, "Marker 1", "the first batch routed")
    assert not [r for r in await pipeline.cs_requests() if cs_event(r) == "Export"], "not before the window closes"
    assert worker.terminate() == 0

    pipeline.start_worker(CS_RELAY_MAPPINGS=str(path))
    await pipeline.send(*[export(n) for n in range(6, 11)], *[feature(n) for n in range(4, 7)], marker(2))
    await until_csb(pipeline, "Marker 2", "the second worker routing the second batch")
    second_batch_in_time = time.time() < window_end - 1

    def exports(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if cs_event(r) == "Export"]

    cs = await pipeline.eventually(
        pipeline.cs_requests,
        lambda rs: sum(r["json"]["value"] for r in exports(rs)) >= 55,
        timeout=WINDOW * 3,
        what="ClientSuccess's aggregated Export",
    )
    csb = await pipeline.eventually(
        pipeline.csb_requests,
        lambda rs: sum(r["json"]["total"] for r in rs if r["path"].endswith("/feature")) >= 6,
        timeout=WINDOW * 2,
        what="CustomerSuccessBox's aggregated feature calls",
    )
    # Nothing more may come: a last marker's window closes after every earlier window,
    # and the user's ClientSuccess requests go in order, so once it arrived any late
    # (repeated) request of an earlier window would have arrived before it.
    await pipeline.send(marker(3))
    await pipeline.eventually(
        pipeline.cs_requests,
        lambda rs: any(cs_event(r) == "Marker 3" for r in rs),
        timeout=WINDOW * 3,
        what="the last marker's window at ClientSuccess",
    )
    cs, csb = await pipeline.cs_requests(), await pipeline.csb_requests()

    export_requests = exports(cs)
    assert sum(r["json"]["value"] for r in export_requests) == 55  # 1 + 2 + ... + 10, exactly
    stamps = [r["json"]["timestamp"] for r in export_requests]
    assert len(stamps) == len(set(stamps)), "one request per window"
    for stamp in stamps:  # stamped with the window's start
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() % WINDOW == 0
    features = [r for r in csb if r["path"].endswith("/feature")]
    assert sum(r["json"]["total"] for r in features) == 6
    assert len({r["json"]["timestamp"] for r in features}) == len(features)
    for r in features:  # the day CustomerSuccessBox receives it
        assert r["json"]["timestamp"][:10] == datetime.now(UTC).date().isoformat()
    if second_batch_in_time:  # both batches fell in one window, across the restart
        assert len(export_requests) == 1 and len(features) == 1
    # The markers are aggregated for ClientSuccess too. A marker's window that closed just
    # before the restart may be sent again (its window-done still in transit when the
    # first worker stopped): the documented bound of one more per restart.
    markers = [cs_event(r) for r in cs if cs_event(r).startswith("Marker") and cs_event(r) != "Marker 3"]
    assert set(markers) == {"Marker 0", "Marker 1", "Marker 2"} and len(markers) <= 4
    assert await pipeline.dead_letters() == []
