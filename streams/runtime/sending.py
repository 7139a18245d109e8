"""The runtime's sending (`Sending`, the runtime's `sending`): the senders that run each
user's deliveries per partner in order (`senders`, streams.runtime.senders), each
destination's circuit breaker (`breakers`, streams.core.breaker) and what tells it of
each answer (`answers`, streams.runtime.delivery.Answers), the backoff of a failed delivery (`retry_delay`), and the
releases whose delivery is under way in this process (`in_flight`).

`revoked(lost)`: the work of the users of by-user partitions taken from this worker
(deliveries, retries, forwards; queued and running) is cancelled and waited for, and
their releases are nobody's here any more: whoever reads the partitions next sends them
again. An assignment adds nothing: work is submitted as events come.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any

from streams.core.breaker import Breakers, Policy
from streams.core.retry import backoff
from streams.runtime.delivery import Answers
from streams.runtime.senderpool import Hold
from streams.runtime.senders import Senders
from streams.settings import Settings


class Sending:
    def __init__(
        self,
        settings: Settings,
        *,
        partition_of: Callable[[str], int],
        counters: Counter[str],
        clock: Callable[[], float],
        rng: random.Random,
        hold: Hold | None = None,
        holding: Collection[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.partition_of = partition_of
        self.counters = counters
        self.clock = clock
        self.rng = rng
        # Each user's work per destination, one piece after another, served by a fixed
        # pool of senders per destination (keyed (user, destination or "forward")).
        # `hold` asked only while `holding` (the catch-up's awaited partitions) is not empty.
        self.senders = Senders(settings.max_in_flight, hold=hold, holding=holding)
        self.in_flight: set[tuple[str, str, int]] = set()  # (user key, destination, pending seq)
        # Each destination's circuit breaker (streams.core.breaker): told every answer,
        # asked before every request, so one sick destination is backed off as a whole.
        self.breakers = Breakers(
            Policy(
                failures=settings.breaker_failures,
                open_seconds=settings.breaker_open_seconds,
                max_open_seconds=max(60.0, settings.breaker_open_seconds),
                max_retry_after=settings.max_retry_after,
            )
        )
        self.answers: dict[str, Answers] = {}  # per destination, made on its first delivery

    def retry_delay(self, attempts: int, retry_after: float | None) -> float:
        s = self.settings
        if retry_after is not None:
            retry_after = min(retry_after, s.max_retry_after)
        return backoff(max(1, attempts), retry_after, base=s.retry_base_delay, cap=s.retry_max_delay, rng=self.rng)

    async def revoked(self, lost: Iterable[int], timeout: float) -> bool:
        """Cancel the work of the users of the by-user partitions `lost` and wait for it;
        False if some did not stop within `timeout`."""
        lost = set(lost)

        def of_lost_user(chain: Any) -> bool:  # keyed (user, destination or "forward")
            return self.partition_of(chain[0]) in lost

        stopped = await self.senders.cancel(of_lost_user, timeout)
        # Their releases are nobody's in this process now: the next owner sends them again.
        self.in_flight = {k for k in self.in_flight if self.partition_of(k[0]) not in lost}
        return stopped
