"""Retry policy, as plain functions: what a partner's answer means and how long to
wait before the next try (../shared/partner-contracts.md section 4).

- `classify(status)`: 2xx done; 400/401/403/404/413/422 fail for good; 408, 429, 5xx
  and transport errors (no status) are worth another try.
- `backoff(attempt, retry_after, ...)`: full-jitter exponential, never less than the
  partner's `Retry-After`.
"""

from __future__ import annotations

import enum
import random
import time
from email.utils import parsedate_to_datetime

NOT_RETRIED = frozenset({400, 401, 403, 404, 413, 422})


class Outcome(enum.StrEnum):
    DONE = "done"
    RETRY = "retry"
    FAIL = "fail"


def classify(status: int | None) -> Outcome:
    """2xx done; 400/401/403/404/413/422 fail for good; 408, 429, 5xx and
    transport errors (status None) are worth another try."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DONE
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    if status in NOT_RETRIED or 400 <= status < 500:
        return Outcome.FAIL
    return Outcome.FAIL  # 1xx/3xx: a partner never answers these on purpose


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff(attempt: int, retry_after: float | None, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before try `attempt + 1`: full-jitter exponential, never less than
    the partner's `Retry-After`."""
    exponential = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = rng.uniform(exponential / 2, exponential)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
