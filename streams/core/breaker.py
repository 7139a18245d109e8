"""A circuit breaker per destination, as a pure state machine over a clock it is given.

One destination that answers 429 or 5xx to everything, or does not answer, is backed
off as a whole instead of being asked again by every user's delivery; one that answers
401/403 to everything (a wrong or revoked key) is *paused* rather than having all its
traffic dead-lettered. The runtime asks `allow(now)` before each request and tells
`record(signal, now, retry_after)` each answer; whatever is not allowed is parked
durably and retried once the breaker lets requests through again.

States:

* `closed`: every request goes. It opens after `Policy.failures` consecutive retryable
  failures (408, 429, 5xx, timeouts, connection errors), or when at least
  `Policy.ratio` of the last `Policy.window` answers were such failures. A 429 with a
  `Retry-After` opens it at once for that long (capped at `Policy.max_retry_after`):
  the partner's rate limit is honoured for the destination, not per delivery.
* `open`: nothing goes until the open period ends (`Policy.open_seconds`, doubled for
  each failed probe up to `Policy.max_open_seconds`, or the Retry-After); then
  `half_open`.
* `half_open`: one probe request goes (another only if that one has no answer after
  `Policy.probe_timeout`); its success closes the breaker, its failure opens it again.
* `paused`: `Policy.auth_failures` consecutive 401/403 answers with no other answer in
  between mean the destination refuses our credentials, not one request: nothing goes
  but a probe every `Policy.pause_seconds`, until one succeeds. A 401/403 after which
  other requests succeed is that request's own refusal (`refused_alone`).

A final refusal of one request (400, 404, 413, 422) shows the partner is up: it counts
as an answer, not as a failure, and stays that request's final refusal.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

AUTH_STATUSES = frozenset({401, 403})


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    PAUSED = "paused"


# The value of the cs_relay_circuit_state gauge for each state.
GAUGE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2, State.PAUSED: 3}


class Signal(enum.StrEnum):
    """What one answer says about the destination as a whole."""

    SUCCESS = "success"  # 2xx
    FAILURE = "failure"  # 408, 429, 5xx, no answer: worth another try, later
    AUTH = "auth"  # 401, 403: our credentials, most likely for every request
    ANSWERED = "answered"  # another final refusal (400, 422, ...): the partner is up


def signal_of(outcome: str, status: int | None) -> Signal:
    """The signal of an answer, from its classified outcome ("done", "retry", "fail")
    and HTTP status."""
    if status in AUTH_STATUSES:
        return Signal.AUTH
    if outcome == "done":
        return Signal.SUCCESS
    if outcome == "retry":
        return Signal.FAILURE
    return Signal.ANSWERED


@dataclass(frozen=True)
class Policy:
    failures: int = 5  # consecutive retryable failures that open a closed breaker
    ratio: float = 0.5  # ... or this share of failures among the last `window` answers
    window: int = 20
    open_seconds: float = 5.0  # the first open period; doubled after each failed probe
    max_open_seconds: float = 60.0
    auth_failures: int = 3  # consecutive 401/403, and nothing else, that pause it
    pause_seconds: float = 30.0  # between probes while paused
    max_retry_after: float = 3600.0  # the longest Retry-After honoured
    probe_timeout: float = 60.0  # a probe without an answer by then lets another go
    log_every: float = 60.0  # how often a paused destination is reported


class Breaker:
    """The breaker of one destination. Times are the caller's clock (seconds)."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.state = State.CLOSED
        self.since: float | None = None  # when the current state began
        self.until = 0.0  # open or paused: when the next probe may go
        self.consecutive = 0  # retryable failures in a row
        self.auth = 0  # 401/403 in a row, with no other answer between
        self.reopened = 0  # failed probes in a row (the open period doubles)
        self.recent: deque[bool] = deque(maxlen=self.policy.window)  # True: a failure
        self.probing: float | None = None  # when the probe in flight went
        self.last_success_at: float | None = None
        self.last_reason = ""
        self._logged_at: float | None = None

    # ------------------------------------------------------------------ asking

    def allow(self, now: float) -> bool:
        """Whether a request may go now. In half-open (or paused, once the pause is
        over) it lets one probe through and counts it as in flight."""
        if self.state is State.CLOSED:
            return True
        if not self.may_probe(now):
            return False
        if self.state is State.OPEN:
            self._enter(State.HALF_OPEN, now)
        self.probing = now
        return True

    def may_probe(self, now: float) -> bool:
        """Whether `allow(now)` would be True, without taking the probe."""
        if self.state is State.CLOSED:
            return True
        if now < self.until:
            return False
        return self.probing is None or now - self.probing >= self.policy.probe_timeout

    def wait(self, now: float) -> float:
        """Seconds until a request may go (0 when one may now)."""
        if self.may_probe(now):
            return 0.0
        if now < self.until:
            return self.until - now
        assert self.probing is not None
        return self.probing + self.policy.probe_timeout - now

    # ------------------------------------------------------------------ telling

    def record(self, signal: Signal, now: float, retry_after: float | None = None, reason: str = "") -> None:
        """One answer (or its absence: FAILURE) to a request this breaker allowed."""
        p = self.policy
        self.last_reason = reason or self.last_reason
        if signal is Signal.SUCCESS or signal is Signal.ANSWERED:
            if signal is Signal.SUCCESS:
                self.last_success_at = now
            self.consecutive = self.auth = self.reopened = 0
            self.recent.append(False)
            self.probing = None
            if self.state is not State.CLOSED:
                self._enter(State.CLOSED, now)
            return
        self.recent.append(True)
        if signal is Signal.AUTH:
            self.consecutive = 0
            self.auth += 1
            if self.state is State.PAUSED or self.auth >= p.auth_failures:
                self.probing = None
                if self.state is not State.PAUSED:
                    self._enter(State.PAUSED, now)
                    self._logged_at = None
                self.until = now + p.pause_seconds
            return
        self.auth = 0
        self.consecutive += 1
        if retry_after is not None and retry_after > 0:
            self._open(now, min(retry_after, p.max_retry_after))
        elif self.state is State.OPEN:
            pass  # an answer to a request sent before it opened: the open period stands
        elif self.state is not State.CLOSED:  # a probe failed
            self.reopened += 1
            self._open(now, min(p.max_open_seconds, p.open_seconds * 2 ** min(self.reopened, 30)))
        elif self.consecutive >= p.failures or (
            len(self.recent) >= p.window and sum(self.recent) >= p.ratio * len(self.recent)
        ):
            self._open(now, p.open_seconds)

    def _open(self, now: float, seconds: float) -> None:
        self.probing = None
        self.until = max(self.until if self.state is State.OPEN else 0.0, now + seconds)
        if self.state is not State.OPEN:
            self._enter(State.OPEN, now)

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        self.since = now
        if state is State.CLOSED:
            self.until = 0.0
            self.recent.clear()

    # ------------------------------------------------------------------ reading

    def refused_alone(self, failed_at: float) -> bool:
        """Whether a 401/403 for a request that first failed at `failed_at` is that
        request's own refusal: other requests have succeeded since."""
        return self.last_success_at is not None and self.last_success_at > failed_at

    def pause_report_due(self, now: float) -> bool:
        """True at most once per `Policy.log_every` while paused (an error line a minute)."""
        if self.state is not State.PAUSED:
            return False
        if self._logged_at is not None and now - self._logged_at < self.policy.log_every:
            return False
        self._logged_at = now
        return True

    def status(self, now: float) -> dict[str, Any]:
        """The breaker as `/status` shows it."""
        return {
            "state": str(self.state),
            "since_seconds": round(now - self.since, 1) if self.since is not None else None,
            "next_probe_in_seconds": round(self.wait(now), 1),
            "consecutive_failures": self.consecutive + self.auth,
            "last_error": self.last_reason,
        }


class Breakers:
    """One breaker per destination, made on first use."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._by_destination: dict[str, Breaker] = {}
        self._closed_seen: dict[str, float | None] = {}

    def __getitem__(self, destination: str) -> Breaker:
        breaker = self._by_destination.get(destination)
        if breaker is None:
            breaker = self._by_destination[destination] = Breaker(self.policy)
        return breaker

    def items(self) -> list[tuple[str, Breaker]]:
        return sorted(self._by_destination.items())

    def closed_since_last_look(self) -> list[str]:
        """The destinations whose breaker has closed again since the last call."""
        out = []
        for dest, breaker in self.items():
            if breaker.state is State.CLOSED and breaker.since is not None:
                if self._closed_seen.get(dest) != breaker.since:
                    self._closed_seen[dest] = breaker.since
                    out.append(dest)
        return out
