"""Fixtures and helpers shared by the mock servers' tests: the shared server and recorder
(tests/test_mockservers.py) and each destination's mock (streams/destinations/*/tests/test_mock.py).

The fixtures (`cs`, `csb`) are HTTP clients of the installed plugin's `partner_mocks`
(streams/testing/plugin.py: the mocks a team's tests get, with the demo credentials),
and reach every test through `pytest_plugins` in the root conftest.py; test modules
import only the helpers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from streams.testing.mocks import DEMO_CREDENTIALS
from streams.testing.partners import PartnerMocks

SOURCE, CS_KEY, CSB_KEY = (
    DEMO_CREDENTIALS[name] for name in ("CLIENTSUCCESS_SOURCE_ID", "CLIENTSUCCESS_API_KEY", "CSB_API_KEY")
)
# What the helpers call a mock with: a session whose relative URLs go to one mock (the
# fixtures below), or aiohttp's TestClient of a mock app a test built itself.
Client = aiohttp.ClientSession | TestClient


@pytest.fixture
async def cs(partner_mocks: PartnerMocks) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=partner_mocks.url("clientsuccess")) as client:
        yield client


@pytest.fixture
async def csb(partner_mocks: PartnerMocks) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=partner_mocks.url("customersuccessbox")) as client:
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


async def cs_post(
    client: Client,
    event: str = "Signed In",
    body: Any = None,
    *,
    key: str = CS_KEY,
    source: str = SOURCE,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    kwargs.setdefault("json", cs_body() if body is None else body)
    return await client.post(cs_path(event, source), params={"api_key": key}, **kwargs)


def bearer(key: str = CSB_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def csb_post(
    client: Client, endpoint: str, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
) -> aiohttp.ClientResponse:
    return await client.post(
        f"/api_js/v1_1/{endpoint}", json=body, headers=bearer() if headers is None else headers, **kwargs
    )


async def recorded(client: Client, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/_mock/requests", params=params)
    assert response.status == 200
    return await response.json()


async def state(client: Client) -> dict[str, Any]:
    response = await client.get("/_mock/state")
    assert response.status == 200
    return await response.json()


async def add_fault(client: Client, **fault: Any) -> list[dict[str, Any]]:
    response = await client.post("/_mock/faults", json=fault)
    assert response.status == 200, await response.text()
    return await response.json()
