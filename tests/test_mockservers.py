"""The shared mock-server pieces in streams/testing/: recording, the admin API, faults, and
running every destination's mock (each mock's own rules are tested in its folder,
streams/destinations/<name>/tests/test_mock.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streams.destinations import REGISTRY
from streams.testing.mocks import credentials_from_env, start_mocks
from tests.mockhelpers import (
    CS_KEY,
    CSB_KEY,
    SOURCE,
    add_fault,
    bearer,
    cs_body,
    cs_path,
    cs_post,
    csb_post,
    recorded,
    state,
)

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- admin API


async def test_admin_requests_are_not_recorded_and_path_prefix_filters(csb: aiohttp.ClientSession) -> None:
    await csb_post(csb, "account", {"accountId": "A1"})
    await csb_post(csb, "identify", {"accountId": "A1", "userId": "u1"})
    await state(csb)
    await csb.get("/_mock/faults")
    assert [r["path"] for r in await recorded(csb)] == ["/api_js/v1_1/account", "/api_js/v1_1/identify"]
    assert [r["path"] for r in await recorded(csb, path_prefix="/api_js/v1_1/id")] == ["/api_js/v1_1/identify"]
    assert await recorded(csb, path_prefix="/nothing") == []


async def test_delete_requests_clears_records_and_the_partner_view(cs: aiohttp.ClientSession) -> None:
    await cs_post(cs)
    assert (await state(cs))["organizations"]
    response = await cs.delete("/_mock/requests")
    assert response.status == 200
    assert await recorded(cs) == []
    assert await state(cs) == {"organizations": {}}
    await cs_post(cs)  # still works afterwards
    assert len(await recorded(cs)) == 1


# ---------------------------------------------------------------- faults


async def test_fault_by_count_answers_the_next_n_requests_then_stops(cs: aiohttp.ClientSession) -> None:
    faults = await add_fault(cs, status=503, count=2)
    assert [(f["status"], f["remaining"]) for f in faults] == [(503, 2)]
    statuses = [(await cs_post(cs)).status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r["status"] for r in await recorded(cs)] == [503, 503, 200]
    assert await (await cs.get("/_mock/faults")).json() == []
    # fault answers do not reach the partner state
    assert len((await state(cs))["organizations"]["o1"]["events"]) == 1


async def test_fault_answer_is_json_in_the_partner_shape(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=500, count=1)
    response = await csb_post(csb, "account", {"accountId": "A1"})
    assert response.status == 500
    assert "error" in await response.json()
    assert (await state(csb))["accounts"] == {}


async def test_fault_with_share_one_and_retry_after(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=429, share=1.0, retry_after=2)
    for _ in range(3):
        response = await csb_post(csb, "account", {"accountId": "A1"})
        assert response.status == 429
        assert response.headers["Retry-After"] == "2"
    assert (await state(csb))["accounts"] == {}
    assert [r["status"] for r in await recorded(csb)] == [429, 429, 429]


async def test_fault_with_share_zero_never_fires(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=503, share=0)
    for _ in range(5):
        assert (await csb_post(csb, "account", {"accountId": "A1"})).status == 200


async def test_fault_with_share_half_fires_on_some_requests(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=503, share=0.5)
    statuses = {(await csb_post(csb, "account", {"accountId": "A1"})).status for _ in range(60)}
    assert statuses == {200, 503}  # 2^-59 chance of a false failure


async def test_latency_fault_delays_every_partner_request_until_cleared(cs: aiohttp.ClientSession) -> None:
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


async def test_latency_and_status_combine(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=504, latency_ms=200, count=1)
    started = time.monotonic()
    response = await csb_post(csb, "account", {"accountId": "A1"})
    assert response.status == 504
    assert time.monotonic() - started >= 0.2


async def test_fault_path_prefix_limits_it_to_matching_paths(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=503, path_prefix="/api_js/v1_1/track")
    assert (await csb_post(csb, "account", {"accountId": "A1"})).status == 200
    assert (await csb_post(csb, "track", {"accountId": "A1", "userId": "u", "event": "E"})).status == 503
    assert (await csb_post(csb, "page", {"accountId": "A1", "userId": "u"})).status == 200


async def test_stacked_faults_are_used_in_order(cs: aiohttp.ClientSession) -> None:
    await add_fault(cs, status=503, count=1)
    faults = await add_fault(cs, status=429, count=1, retry_after=1)
    assert [f["status"] for f in faults] == [503, 429]
    first, second, third = [await cs_post(cs) for _ in range(3)]
    assert (first.status, second.status, third.status) == (503, 429, 200)
    assert "Retry-After" not in first.headers and second.headers["Retry-After"] == "1"


async def test_delete_faults_clears_them(csb: aiohttp.ClientSession) -> None:
    await add_fault(csb, status=503)
    await add_fault(csb, latency_ms=100)
    response = await csb.delete("/_mock/faults")
    assert response.status == 200 and await response.json() == []
    assert (await csb_post(csb, "account", {"accountId": "A1"})).status == 200


@pytest.mark.parametrize(
    "fault",
    [
        {},
        {"status": 99},
        {"status": "503"},
        {"status": 503, "count": 0},
        {"status": 503, "share": 1.5},
        {"status": 503, "retry_after": -1},
        {"latency_ms": -5},
        {"status": 503, "retryAfter": 2},
        [1],
    ],
)
async def test_invalid_fault_is_400_and_adds_nothing(cs: aiohttp.ClientSession, fault: Any) -> None:
    response = await cs.post("/_mock/faults", json=fault)
    assert response.status == 400
    assert (await response.json())["error"]
    assert await (await cs.get("/_mock/faults")).json() == []


# ---------------------------------------------------------------- running both


async def test_start_mocks_on_free_ports() -> None:
    mocks = await start_mocks(
        "127.0.0.1",
        {p.key: 0 for p in REGISTRY},  # 0: a free port each, not the defaults another process may hold
        {"CLIENTSUCCESS_SOURCE_ID": SOURCE, "CLIENTSUCCESS_API_KEY": CS_KEY, "CSB_API_KEY": CSB_KEY},
    )
    try:
        assert not mocks.urls["clientsuccess"].endswith(":0") and not mocks.urls["customersuccessbox"].endswith(":0")
        assert mocks.urls["clientsuccess"] != mocks.urls["customersuccessbox"]
        async with aiohttp.ClientSession() as session:
            url = mocks.urls["clientsuccess"] + cs_path("E")
            async with session.post(url, params={"api_key": CS_KEY}, json=cs_body()) as response:
                assert response.status == 200
            async with session.post(
                mocks.urls["customersuccessbox"] + "/api_js/v1_1/account", json={"accountId": "A"}, headers=bearer()
            ) as response:
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
        "demo-source",
        "demo-cs-api-key",
        "k3",
    )


async def test_run_mocks_prints_urls_without_keys_and_stops_on_sigterm() -> None:
    env = dict(
        os.environ,
        CLIENTSUCCESS_SOURCE_ID="s9",
        CLIENTSUCCESS_API_KEY="cs-top-secret",
        CSB_API_KEY="csb-top-secret",
        PYTHONPATH=str(ROOT),
    )
    code = (
        "from streams.testing.mocks import run_mocks; "
        "run_mocks('127.0.0.1', {'clientsuccess': 0, 'customersuccessbox': 0, 'webhook': 0})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = [await asyncio.to_thread(proc.stdout.readline) for _ in range(2)]
        assert lines[0].startswith("ClientSuccess mock listening on http://127.0.0.1:")
        assert lines[1].startswith("CustomerSuccessBox mock listening on http://127.0.0.1:")
        csb_url = lines[1].split()[-1]
        async with aiohttp.ClientSession() as session:
            async with session.post(
                csb_url + "/api_js/v1_1/account", json={"accountId": "A"}, headers=bearer("csb-top-secret")
            ) as response:
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
