"""An optional request rate per partner that slows down by itself on 429.

A token bucket of `rate` requests per second (bursts up to one second's worth). When
the partner answers 429 the rate halves (never below `floor` of the configured one);
it then climbs back linearly, regaining the configured rate over `recovery` seconds
without further 429s: the partner's own limit is found and followed, not hammered.

A token is taken only when its request goes (`take()`, pure bookkeeping against an
injected clock, tested without sleeping). `acquire()`, the thin async wrapper the
HTTP client awaits, queues the waiters in order; a waiter that gives up (cancelled, or
its `within` seconds over before its turn) leaves having taken nothing, so the
requests behind it go at the rate, neither later nor sooner (issue 22, finding 4:
tokens reserved before the sleep were kept by waiters that timed out, and a backlog
behind a few hundred of them waited for nothing until its deliveries timed out too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class AdaptiveRate:
    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        floor: float = 0.05,
        recovery: float = 30.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = rate
        self._floor = max(rate * floor, 0.01)
        self._recovery = recovery
        self._clock = clock
        self._rate = rate
        self._tokens = max(1.0, rate)
        self._last = clock()
        self._turn = asyncio.Lock()  # FIFO: the waiter holding it is the next to go

    @property
    def rate(self) -> float:
        """The current rate in requests per second."""
        self._advance(self._clock())
        return self._rate

    def _advance(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._rate = min(self.ceiling, self._rate + self.ceiling * elapsed / self._recovery)
        self._tokens = min(max(1.0, self._rate), self._tokens + elapsed * self._rate)

    def take(self) -> float:
        """Take a token if there is one (0.0: send now); otherwise take nothing and
        return the seconds until there will be one."""
        self._advance(self._clock())
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def throttled(self) -> None:
        """The partner answered 429: halve the rate, and wait for a token."""
        self._advance(self._clock())
        self._rate = max(self._floor, self._rate / 2)
        self._tokens = min(self._tokens, 0.0)

    async def acquire(self, within: float | None = None) -> bool:
        """Wait for a token, after the waiters before this one; True once it is taken.
        False, nothing taken, if it cannot be had within `within` seconds (the
        caller's budget): the waiter leaves at once rather than hold up the queue."""
        if within is not None and within <= 0:
            return False
        until = None if within is None else self._clock() + within
        try:
            async with asyncio.timeout(within):
                await self._turn.acquire()
        except TimeoutError:
            return False
        try:
            while True:
                wait = self.take()
                if wait <= 0.0:
                    return True
                if until is not None and self._clock() + wait > until:
                    return False
                await asyncio.sleep(wait)
        finally:
            self._turn.release()
