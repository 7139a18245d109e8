"""An optional request rate per partner that slows down by itself on 429.

A token bucket of `rate` requests per second (bursts up to one second's worth). When
the partner answers 429 the rate halves (never below `floor` of the configured one);
it then climbs back linearly, regaining the configured rate over `recovery` seconds
without further 429s: the partner's own limit is found and followed, not hammered.

`reserve()` is pure bookkeeping against an injected clock (tested without sleeping);
`acquire()` is the thin async wrapper the HTTP client awaits.
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

    def reserve(self) -> float:
        """Take one request's token; the seconds to wait before sending it (0: now).
        Tokens may go negative: waiters queue up behind each other, in order."""
        self._advance(self._clock())
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def throttled(self) -> None:
        """The partner answered 429: halve the rate."""
        self._advance(self._clock())
        self._rate = max(self._floor, self._rate / 2)
        self._tokens = min(self._tokens, 0.0)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
