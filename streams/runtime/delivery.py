"""HTTP delivery to the partners: one pooled aiohttp client per destination.

What an answer means (../shared/partner-contracts.md section 4) is decided by the pure
`streams.core.retry.classify()`; how long to wait before the next try by `backoff()`. The
`PartnerClient` adds the credentials to a `PartnerRequest` at the last moment, so no
other part of cs-relay ever holds a key in a request, a log line or a dead letter.

What is the same for every request of a destination is built once, when its client is:
the fixed headers (credentials included) are the session's own, and each path's URL,
with the credentials' query, is kept (`RequestURLs`). A request then costs its body,
its URL's lookup and, for a destination that signs, its signature.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from streams import __version__
from streams.core.breaker import Breakers, State, signal_of
from streams.core.decision import PartnerRequest
from streams.core.redact import redact
from streams.core.retry import Outcome, backoff, classify, retry_after_seconds
from streams.destinations.base import Credentials
from streams.runtime.ratelimit import AdaptiveRate

log = logging.getLogger(__name__)
circuits = logging.getLogger("cs_relay")

EXCERPT_CHARS = 300
USER_AGENT = f"cs-relay/{__version__}"
MAX_URLS = 1024  # distinct request paths whose URL a client keeps (ClientSuccess: one per event name)
# A request's body: `json.dumps(..., separators=(",", ":"), ensure_ascii=False)` without
# building an encoder per request.
BODY_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Result:
    """What became of one request. RETRY means the quick in-process retries are used
    up and the caller should park the delivery durably (`streams.core.pending.park`)."""

    outcome: Outcome
    status: int | None
    attempts: int
    excerpt: str  # a short, redacted excerpt of the last answer or error ("" for one meaning done)
    elapsed: float
    retry_after: float | None = None  # the partner's Retry-After, in seconds


class Answers:
    """`PartnerClient.send`'s `on_answer`: tells the destination's breaker each answer
    (status None: none came), from this module (no call out on a request's way); True
    while it stays closed (the caller's quick retries may go on)."""

    __slots__ = ("breakers", "clock", "counters", "destination")

    def __init__(
        self, destination: str, breakers: Breakers, clock: Callable[[], float], counters: Counter[str]
    ) -> None:
        self.destination = destination
        self.breakers = breakers
        self.clock = clock
        self.counters = counters

    def __call__(self, outcome: Outcome, status: int | None, retry_after: float | None) -> bool:
        destination, breaker = self.destination, self.breakers[self.destination]
        before = breaker.state
        reason = f"answered {status}" if status is not None else "no answer"
        breaker.record(signal_of(outcome.value, status), self.clock(), retry_after, reason)
        if breaker.state is not before:
            self.counters[f"circuit_{breaker.state}.{destination}"] += 1
            if breaker.state is State.CLOSED:
                circuits.warning("%s answers again: its circuit breaker is closed", destination)
            elif breaker.state is State.OPEN:
                wait = breaker.wait(self.clock())
                circuits.warning(
                    "%s %s: its circuit breaker is open, deliveries park for %.0f s before a probe",
                    destination,
                    reason,
                    wait,
                )
        return breaker.state is State.CLOSED


class RequestURLs:
    """Each request path's URL under one base URL, with the credentials' query parameters,
    built on first use and kept: a request's URL is then a lookup, not a parse. At most
    MAX_URLS of them (all dropped when full: paths are few, event names aside)."""

    def __init__(self, base_url: str, query: Mapping[str, str]) -> None:
        self._base = base_url.rstrip("/")
        self._query = dict(query)
        self._urls: dict[str, URL] = {}

    def __repr__(self) -> str:  # never the query: it may hold a key
        return f"RequestURLs({self._base!r}, {len(self._urls)} kept)"

    def url(self, path: str, query: Mapping[str, str]) -> URL:
        """The URL of a request to `path` with its own `query` (the credentials' win over it)."""
        url = self._urls.get(path)
        if url is None:
            try:
                url = URL(self._base + path)
            except ValueError as exc:  # as aiohttp says it of a URL it cannot parse
                raise aiohttp.InvalidUrlClientError(self._base + path) from exc
            if self._query:
                url = url.update_query(self._query)
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            self._urls[path] = url
        if query:
            url = url.update_query({**query, **self._query})
        return url


class PartnerClient:
    """Sends requests to one partner with pooled keep-alive connections and retries."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        classify: Callable[[int | None], Outcome] = classify,
        timeout: float = 5.0,
        max_in_flight: int = 64,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        secrets: Iterable[str] = (),
        rate_limit: float | None = None,
        max_inline_retry_after: float = 5.0,
    ) -> None:
        self.name = name
        credentials = credentials or Credentials()
        self._urls = RequestURLs(base_url, credentials.query)
        self._sign = credentials.sign  # the headers over each exact body sent, if it signs
        self.classify = classify  # what this destination's answers mean (its plugin's rule)
        # Every request's headers, credentials included: the session's defaults, which
        # aiohttp copies into each request as they are.
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **credentials.headers}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        # A longer Retry-After is handed back to the caller, who parks the delivery with
        # that due time, rather than slept here while the event's acknowledgement waits.
        self._max_inline_retry_after = max_inline_retry_after
        self._limit = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._secrets = [s for s in secrets if s]
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()
        self._rate = AdaptiveRate(rate_limit) if rate_limit else None
        # Called after each attempt with (status, seconds, outcome, attempt): metrics.
        self.on_attempt: Callable[[int | None, float, Outcome, int], None] | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30)
            # No cookie jar: partners are called with credentials, never cookies (and
            # the jar's per-request filtering is work for nothing).
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers, cookie_jar=aiohttp.DummyCookieJar()
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        request: PartnerRequest,
        *,
        budget: float | None = None,
        on_answer: Callable[[Outcome, int | None, float | None], bool] | None = None,
    ) -> Result:
        """Deliver one request with up to `max_retries` quick retries of what is worth
        retrying; never raises for HTTP trouble. A RETRY result goes to the caller, who
        parks the delivery durably rather than sleeping on it here.

        `budget`: the seconds the whole send may take, attempts and waits included (no
        answer by then: RETRY). `on_answer(outcome, status, retry_after)` is told each
        answer; False stops the quick retries (the destination's breaker opened)."""
        await self.start()
        assert self._session is not None
        started = time.monotonic()
        deadline = None if budget is None else started + budget
        attempt = 0
        last: tuple[int | None, str, float | None] = (None, "", None)
        while True:
            attempt += 1
            tried = time.monotonic()
            answer = await self._try_once(request, deadline)
            if answer is None:
                # Not sent: no turn under the rate limit within the budget. Not the
                # partner's answer (its breaker is not told); the last one, if any, is.
                status, excerpt, retry_after = last if attempt > 1 else (None, self._unsent(), None)
                return Result(Outcome.RETRY, status, attempt - 1, excerpt, time.monotonic() - started, retry_after)
            status, excerpt, retry_after = last = answer
            outcome = self.classify(status)
            if self.on_attempt is not None:
                self.on_attempt(status, time.monotonic() - tried, outcome, attempt)
            go_on = on_answer(outcome, status, retry_after) if on_answer is not None else True
            if outcome is not Outcome.RETRY or attempt > self._max_retries or not go_on:
                return Result(outcome, status, attempt, excerpt, time.monotonic() - started, retry_after)
            if retry_after is not None and retry_after > self._max_inline_retry_after:
                return Result(outcome, status, attempt, excerpt, time.monotonic() - started, retry_after)
            delay = backoff(attempt, retry_after, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng)
            if deadline is not None and time.monotonic() + delay >= deadline:
                return Result(outcome, status, attempt, excerpt, time.monotonic() - started, retry_after)
            log.warning(
                "%s answered %s to %s %s (attempt %d); retrying in %.1fs",
                self.name,
                status if status is not None else excerpt,
                request.method,
                request.path,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    async def _try_once(
        self, request: PartnerRequest, deadline: float | None
    ) -> tuple[int | None, str, float | None] | None:
        """One request's (status, excerpt, Retry-After); None if it was not sent."""
        # The exact bytes sent: a destination may sign them (credentials see the body).
        body = BODY_JSON.encode(request.json).encode("utf-8")
        # One of `max_in_flight` slots (as many as the pool has connections) first: the
        # request timeout then counts from when the request goes out, not while it
        # waits for a connection behind slower ones. Then its turn under the rate
        # limit, taken when it goes: a request that gives up waiting (its budget, or
        # cancelled) takes no turn from the others. It waits no longer than leaves the
        # request its own timeout (half the budget left, if that is shorter): a turn
        # taken at the end of the budget would send a request that times out at once,
        # and its retry would reach the partner twice.
        async with self._slots:
            if self._rate is not None:
                within = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    within = max(left - self._timeout_seconds, left / 2)
                if not await self._rate.acquire(within):
                    return None
            return await self._request(request, body, deadline)

    def _unsent(self) -> str:
        rate = self._rate.rate if self._rate is not None else 0.0
        return f"not sent: no turn within the delivery's budget under the rate limit of {rate:g} requests/s"

    async def _request(
        self,
        request: PartnerRequest,
        body: bytes,
        deadline: float | None,
    ) -> tuple[int | None, str, float | None]:
        assert self._session is not None
        timeout = self._timeout
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < self._timeout_seconds:
            timeout = aiohttp.ClientTimeout(total=max(0.001, left))
        try:
            async with self._session.request(
                request.method,
                self._urls.url(request.path, request.query),
                data=body,
                headers=self._sign(body) if self._sign is not None else None,
                timeout=timeout,
            ) as response:
                answer = await response.read()  # whole: the connection goes back to the pool
                status = response.status
                if status == 429 and self._rate is not None:
                    self._rate.throttled()
                return (
                    status,
                    self._answer_excerpt(status, answer),
                    retry_after_seconds(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return None, "timed out", None
        except aiohttp.ClientError as exc:
            return None, self._excerpt(f"{type(exc).__name__}: {exc}"), None

    def _answer_excerpt(self, status: int, answer: bytes) -> str:
        """The excerpt of an answer, none for one that means done: nothing reads it (an
        excerpt goes into parked deliveries' errors, dead letters and retry logs), and
        decoding and redacting every successful answer cost 0.5 us a request (timeit)."""
        if self.classify(status) is Outcome.DONE:
            return ""
        # Decoded as UTF-8 (partners answer JSON: RFC 8259), whole: cut first, the
        # excerpt's redaction could miss a secret split at the cut.
        return self._excerpt(answer.decode("utf-8", "replace"))

    def _excerpt(self, text: str) -> str:
        return redact(text, self._secrets)[:EXCERPT_CHARS]
