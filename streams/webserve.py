"""Starting an aiohttp application on a host and port (`cs-relay ingest`, the partner mocks)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(app: web.Application, host: str, port: int, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start `app` on `host`:`port` (0 picks a free port); the runner (`cleanup()` stops
    it) and the bound port. No access log: request lines can carry credentials
    (`?api_key=`). `runner_options` go to `web.AppRunner`."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]
