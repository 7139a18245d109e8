"""Run both partner imitations: in-process for tests (`start_mocks`) or as a command (`run_mocks`)."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field

from aiohttp import web

from streams.destinations.clientsuccess import mock as clientsuccess
from streams.destinations.customersuccessbox import mock as customersuccessbox
from streams.ops.webserve import client_url as _url
from streams.ops.webserve import serve as _serve

DEMO_CREDENTIALS = {
    "CLIENTSUCCESS_SOURCE_ID": "demo-source",
    "CLIENTSUCCESS_API_KEY": "demo-cs-api-key",
    "CSB_API_KEY": "demo-csb-api-key",
}


def worker_partner_env(clientsuccess_url: str, csb_url: str, credentials: dict[str, str]) -> dict[str, str]:
    """The worker's partner variables for mocks at these URLs (credentials by variable name)."""
    return {**credentials, "CLIENTSUCCESS_BASE_URL": clientsuccess_url, "CSB_BASE_URL": csb_url}


@dataclass
class MockServers:
    """Both mocks, running. `close()` stops them; also usable as `async with`."""

    clientsuccess_url: str
    csb_url: str
    clientsuccess_app: web.Application
    csb_app: web.Application
    _runners: tuple[web.AppRunner, ...]
    credentials: dict[str, str] = field(default_factory=dict)  # by the worker's variable names

    def worker_env(self) -> dict[str, str]:
        """The variables that point a cs-relay worker at these mocks, credentials included."""
        return worker_partner_env(self.clientsuccess_url, self.csb_url, self.credentials)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    async def __aenter__(self) -> "MockServers":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_mocks(
    host: str = "127.0.0.1",
    clientsuccess_port: int = 8081,
    csb_port: int = 8082,
    *,
    cs_source_id: str,
    cs_api_key: str,
    csb_api_key: str,
) -> MockServers:
    """Start the ClientSuccess and CustomerSuccessBox mocks; port 0 picks a free port."""
    cs_app = clientsuccess.create_app(cs_source_id, cs_api_key)
    csb_app = customersuccessbox.create_app(csb_api_key)
    cs_runner, cs_port = await _serve(cs_app, host, clientsuccess_port)
    try:
        csb_runner, bound_csb_port = await _serve(csb_app, host, csb_port)
    except BaseException:
        await cs_runner.cleanup()
        raise
    return MockServers(
        clientsuccess_url=_url(host, cs_port),
        csb_url=_url(host, bound_csb_port),
        clientsuccess_app=cs_app,
        csb_app=csb_app,
        _runners=(cs_runner, csb_runner),
        credentials={
            "CLIENTSUCCESS_SOURCE_ID": cs_source_id,
            "CLIENTSUCCESS_API_KEY": cs_api_key,
            "CSB_API_KEY": csb_api_key,
        },
    )


def credentials_from_env() -> dict[str, str]:
    """`cs_source_id`, `cs_api_key`, `csb_api_key` from the environment (demo values if unset or empty)."""
    def read(name: str) -> str:
        return os.environ.get(name) or DEMO_CREDENTIALS[name]

    return {
        "cs_source_id": read("CLIENTSUCCESS_SOURCE_ID"),
        "cs_api_key": read("CLIENTSUCCESS_API_KEY"),
        "csb_api_key": read("CSB_API_KEY"),
    }


async def _run_until_signalled(host: str, clientsuccess_port: int, csb_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    mocks = await start_mocks(host, clientsuccess_port, csb_port, **credentials_from_env())
    try:
        print(f"ClientSuccess mock listening on {mocks.clientsuccess_url}", flush=True)
        print(f"CustomerSuccessBox mock listening on {mocks.csb_url}", flush=True)
        await stop.wait()
    finally:
        await mocks.close()


def run_mocks(host: str = "127.0.0.1", clientsuccess_port: int = 8081, csb_port: int = 8082) -> None:
    """Run both mocks with the credentials from the environment until SIGINT or SIGTERM."""
    asyncio.run(_run_until_signalled(host, clientsuccess_port, csb_port))
