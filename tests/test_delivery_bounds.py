"""How long `PartnerClient.send` may hold a delivery (issue 16, item 5): a Retry-After
beyond `max_inline_retry_after` is returned to the caller to park, not slept in-process;
a `budget` bounds the whole send, attempts and waits included; `on_answer` sees every
answer and may stop the quick retries (the destination's breaker opened)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestServer

from streams.core.decision import PartnerRequest
from streams.core.retry import Outcome
from streams.runtime.delivery import PartnerClient

REQUEST = PartnerRequest("POST", "/x", {"a": 1})


async def serve(answers: list[tuple[int, dict[str, str]]], delay: float = 0.0):
    seen: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if delay:
            await asyncio.sleep(delay)
        status, headers = answers.pop(0) if answers else (200, {})
        return web.json_response({}, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    return server, seen


async def send(server: TestServer, **options) -> tuple[object, float]:
    send_options = {k: options.pop(k) for k in ("budget", "on_answer") if k in options}
    client = PartnerClient("Partner", str(server.make_url("")), backoff_base=0.01, **options)
    try:
        started = time.monotonic()
        result = await client.send(REQUEST, **send_options)
        return result, time.monotonic() - started
    finally:
        await client.close()


async def test_a_long_retry_after_is_handed_back_to_park_not_slept():
    server, seen = await serve([(429, {"Retry-After": "600"})] * 3)
    try:
        result, took = await send(server, max_retries=2, max_inline_retry_after=5.0)
    finally:
        await server.close()
    assert (result.outcome, result.status, result.retry_after, result.attempts) == (Outcome.RETRY, 429, 600, 1)
    assert took < 2 and len(seen) == 1


async def test_a_short_retry_after_is_still_waited_for_in_process():
    server, seen = await serve([(429, {"Retry-After": "1"})])
    try:
        result, took = await send(server, max_retries=2, max_inline_retry_after=5.0)
    finally:
        await server.close()
    assert (result.outcome, result.attempts) == (Outcome.DONE, 2)
    assert 1 <= took < 3 and len(seen) == 2


async def test_the_budget_bounds_the_whole_send_attempts_and_waits_included():
    server, _ = await serve([], delay=3.0)
    try:
        result, took = await send(server, max_retries=5, timeout=5.0, budget=1.0)
    finally:
        await server.close()
    assert result.outcome is Outcome.RETRY and result.status is None
    assert took < 1.8


async def test_on_answer_sees_each_answer_and_may_stop_the_quick_retries():
    server, seen = await serve([(503, {}), (503, {}), (503, {})])
    answers: list[tuple[Outcome, int | None]] = []

    def on_answer(outcome: Outcome, status: int | None, retry_after: float | None) -> bool:
        answers.append((outcome, status))
        return len(answers) < 2

    try:
        result, _ = await send(server, max_retries=5, on_answer=on_answer)
    finally:
        await server.close()
    assert answers == [(Outcome.RETRY, 503), (Outcome.RETRY, 503)]
    assert result.outcome is Outcome.RETRY and result.attempts == 2 and len(seen) == 2


async def test_the_request_timeout_counts_from_when_the_request_is_sent_not_from_the_queue():
    """Six deliveries at once through one connection (max_in_flight 1) to a partner that
    answers in 0.3 s, with a 0.5 s request timeout: each request takes 0.3 s once sent,
    so none times out, though the last waits 1.5 s for its turn."""
    server, seen = await serve([], delay=0.3)
    client = PartnerClient("Partner", str(server.make_url("")), timeout=0.5, max_in_flight=1, max_retries=0)
    try:
        results = await asyncio.gather(*(client.send(REQUEST) for _ in range(6)))
    finally:
        await client.close()
        await server.close()
    assert [(r.outcome, r.status) for r in results] == [(Outcome.DONE, 200)] * 6, [r.excerpt for r in results]
    assert len(seen) == 6
