"""Run every registered destination's imitation: in-process for tests and the benchmark
(`start_mocks`) or as a command (`run_mocks`, `cs-relay mocks`).

Each destination's mock lives in its folder (`streams/destinations/<key>/mock.py`) and is
described by its plugin's `Mock`: the factory, the default port, the variable that
points a worker at it and the demo credentials both sides agree on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streams.destinations import REGISTRY
from streams.ops.webserve import client_url, serve

# The demo credentials of every destination, by the worker's variable names.
DEMO_CREDENTIALS: dict[str, str] = {name: value for p in REGISTRY for name, value in p.mock.demo_env.items()}


def credentials_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The mocks' credentials, by the worker's variable names: from the environment,
    the demo values where unset or empty."""
    env = os.environ if env is None else env
    return {name: env.get(name) or demo for name, demo in DEMO_CREDENTIALS.items()}


def worker_partner_env(urls: Mapping[str, str], credentials: Mapping[str, str]) -> dict[str, str]:
    """The worker's destination variables for mocks at `urls` (by destination key)."""
    env: dict[str, str] = {}
    for p in REGISTRY:
        if p.key in urls:
            env.update(p.mock.worker_env(urls[p.key], credentials))
    return env


@dataclass
class MockServers:
    """The mocks, running: their base URLs and aiohttp apps by destination key.
    `close()` stops them; also usable as `async with`."""

    urls: dict[str, str]
    apps: dict[str, web.Application]
    _runners: list[web.AppRunner]
    credentials: dict[str, str] = field(default_factory=dict)  # by the worker's variable names

    def worker_env(self) -> dict[str, str]:
        """The variables that point a cs-relay worker at these mocks, credentials included."""
        return worker_partner_env(self.urls, self.credentials)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    async def __aenter__(self) -> MockServers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_mocks(
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    credentials: Mapping[str, str] | None = None,
) -> MockServers:
    """Start every registered destination's mock. `ports` by destination key (each
    plugin's default where absent; 0 picks a free port); `credentials` by the worker's
    variable names (the demo ones where absent)."""
    ports = {p.key: p.mock.port for p in REGISTRY} | dict(ports or {})
    creds = {**DEMO_CREDENTIALS, **(credentials or {})}
    mocks = MockServers({}, {}, [], creds)
    try:
        for p in REGISTRY:
            app = p.mock.create_app(creds)
            runner, port = await serve(app, host, ports[p.key])
            mocks._runners.append(runner)
            mocks.urls[p.key] = client_url(host, port)
            mocks.apps[p.key] = app
    except BaseException:
        await mocks.close()
        raise
    return mocks


async def _run_until_signalled(host: str, ports: Mapping[str, int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    mocks = await start_mocks(host, ports, credentials_from_env())
    try:
        for p in REGISTRY:
            print(f"{p.name} mock listening on {mocks.urls[p.key]}", flush=True)
        await stop.wait()
    finally:
        await mocks.close()


def run_mocks(host: str = "127.0.0.1", ports: Mapping[str, int] | None = None) -> None:
    """Run every mock with the credentials from the environment until SIGINT or SIGTERM."""
    asyncio.run(_run_until_signalled(host, dict(ports or {})))


def port_options() -> list[tuple[str, str, int, Any]]:
    """(option, destination key, default port, destination name) for the CLI."""
    return [(f"--{p.mock.option}-port", p.key, p.mock.port, p.name) for p in REGISTRY]
