"""Every registered destination's mock, running on an event loop of its own thread, for
tests: base URLs, the requests each received, faults to inject, a reset between tests.

Its own thread, so a test may call the mocks from synchronous code (`requests`, a
team's own client) as well as from a coroutine, and a worker process may call them
while the test waits: nothing depends on the test's event loop. The pytest plugin
(`streams.testing.plugin`) starts one `PartnerMocks` per session; a test reads it
through the `partner_mocks` fixture, reset before each test.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from streams.destinations import REGISTRY
from streams.testing.mocks import MockServers, start_mocks
from streams.testing.recorder import FAULTS_KEY, RECORDS_KEY, STATE_KEY, parse_fault

T = TypeVar("T")

# Short names besides the destinations' keys and their Segment names.
ALIASES = {"cs": "clientsuccess", "csb": "customersuccessbox"}
START_TIMEOUT = 30.0


class PartnerMocks:
    """The mocks of every registered destination on free ports (or `ports`, by key).

    `credentials` by the worker's variable names (`CLIENTSUCCESS_API_KEY`, ...): what the
    mocks accept; the demo ones where absent. A destination is named by its key
    (`clientsuccess`), its Segment name (`ClientSuccess`) or an alias (`cs`, `csb`).
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cs-relay-partner-mocks", daemon=True)
        self._thread.start()
        wanted = {p.key: 0 for p in REGISTRY} | dict(ports or {})
        try:
            self._servers: MockServers = self._call(start_mocks(host, wanted, credentials), START_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise

    # ----------------------------------------------------------------- where

    @property
    def urls(self) -> dict[str, str]:
        """Base URLs by destination key."""
        return dict(self._servers.urls)

    def url(self, destination: str) -> str:
        """The base URL of one destination's mock (no trailing slash)."""
        return self._servers.urls[self.key(destination)]

    @property
    def credentials(self) -> dict[str, str]:
        """What the mocks accept, by the worker's variable names."""
        return dict(self._servers.credentials)

    def worker_env(self) -> dict[str, str]:
        """The variables that point a cs-relay worker at these mocks, credentials included."""
        return self._servers.worker_env()

    def key(self, destination: str) -> str:
        """The registry key of `destination` (a key, a Segment name or an alias)."""
        for plugin in REGISTRY:
            if destination in (plugin.key, plugin.name):
                return plugin.key
        if destination in ALIASES:
            return ALIASES[destination]
        known = ", ".join(p.key for p in REGISTRY)
        raise KeyError(f"no mock for {destination!r}: the destinations are {known}")

    # ----------------------------------------------------------------- what they received

    def requests(self, destination: str, path_prefix: str = "") -> list[dict[str, Any]]:
        """The requests the mock answered, oldest first: method, path, query and headers
        (credentials redacted), the JSON body (`json`), the status it answered."""
        app = self._servers.apps[self.key(destination)]
        return self._in_loop(lambda: [copy.deepcopy(r) for r in app[RECORDS_KEY] if r["path"].startswith(path_prefix)])

    def state(self, destination: str) -> dict[str, Any]:
        """What the partner now knows (its accounts, users, events), as `/_mock/state` shows it."""
        app = self._servers.apps[self.key(destination)]
        return self._in_loop(lambda: copy.deepcopy(app[STATE_KEY].view()))

    # ----------------------------------------------------------------- faults

    def fault(self, destination: str, **spec: Any) -> dict[str, Any]:
        """Make the mock fail: `status`, `count`, `share`, `retry_after`, `latency_ms`,
        `path_prefix` as `POST /_mock/faults` takes them (streams/testing/recorder.py).
        Raises `FaultError` for a spec it cannot use."""
        parse_fault(spec, 0)  # validate here, in the caller's thread
        app = self._servers.apps[self.key(destination)]
        return self._in_loop(lambda: app[FAULTS_KEY].add(spec).to_json())

    def clear_faults(self, destination: str | None = None) -> None:
        """Remove the faults of one mock, or of all."""
        keys = [self.key(destination)] if destination else list(self._servers.apps)

        def clear() -> None:
            for key in keys:
                self._servers.apps[key][FAULTS_KEY].clear()

        self._in_loop(clear)

    def reset(self) -> None:
        """Forget every recorded request, every partner's state and every fault."""

        def clear() -> None:
            for app in self._servers.apps.values():
                app[RECORDS_KEY].clear()
                app[STATE_KEY].clear()
                app[FAULTS_KEY].clear()

        self._in_loop(clear)

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the servers and their thread."""
        if not self._loop.is_closed():
            try:
                self._call(self._servers.close(), START_TIMEOUT)
            finally:
                self._stop_loop()

    def __enter__(self) -> PartnerMocks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _in_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the mocks' loop (their state is theirs), and return what it returns."""

        async def run() -> T:
            return fn()

        return self._call(run(), START_TIMEOUT)
