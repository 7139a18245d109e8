"""The "Try a message" page, `/console/try`: what cs-relay would do now with Segment
messages typed or pasted into a form (one message, a JSON array of them, or JSON lines,
as `cs-relay preview` reads a file), per message and per destination: the request it
would send (method, URL, headers with credentials masked, JSON body), or that it would
hold, skip or refuse the call and why, and the held events a message would release.

The POST carries the session's CSRF token. Each user's messages are previewed together,
in order, by the worker that owns the user (`Sources.preview`: here, or that worker's
`POST /preview/{userId}`), through the worker's own step against the user's state
(`streams.core.preview`); the words are the CLI's (`streams.core.previewtext`).
Nothing is sent to a destination and nothing is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from streams.core.preview import AGGREGATE, HOLD, REFUSE, RELEASE, SEND, SKIP, describe_call
from streams.core.previewtext import PreviewInputError, heading, outcome_line, per_user, read_messages, summary
from streams.core.redact import redact
from streams.core.segment import parse
from streams.ops.console.html import Html, fmt, hidden_csrf, join, table
from streams.ops.console.layout import layout
from streams.ops.console.responses import page, text
from streams.ops.console.session import Session
from streams.ops.console.sources import Located
from streams.ops.preview_api import MAX_BODY_BYTES, MAX_MESSAGES, PreviewUnavailable, ask_owner

if TYPE_CHECKING:
    from streams.ops.console.web import Console

NOTHING_SENT = (
    "Nothing is sent to any destination and nothing is written: each user's messages go through the "
    "worker's own step, against the user's state now, on the worker that owns the user."
)
Ask = Callable[[str, Sequence[bytes]], Awaitable[list[dict[str, Any]]]]  # Sources.preview
EXAMPLE = '{"type": "track", "userId": "u1", "event": "Signed In", "messageId": "try-1"}'
VERDICT_WORDS = {
    SEND: "sent",
    AGGREGATE: "aggregated",
    RELEASE: "released",
    HOLD: "held",
    SKIP: "skipped",
    REFUSE: "refused",
}


def try_form(messages: str, *, csrf: str) -> Html:
    return fmt(
        '<form method="post" action="/console/try" class="try">{csrf}'
        '<label for="messages">Segment messages: one JSON object, a JSON array of them, or JSON lines '
        "(at most {most}; each user's in order)</label>"
        '<textarea id="messages" name="messages" rows="6" spellcheck="false" required '
        'placeholder="{example}">{messages}</textarea>'
        '<button type="submit" id="try-preview">Preview</button></form>'
        '<p class="note">{nothing}</p>',
        csrf=hidden_csrf(csrf),
        most=MAX_MESSAGES,
        example=EXAMPLE,
        messages=messages,
        nothing=NOTHING_SENT,
    )


def request_cell(request: Mapping[str, Any] | None, secrets: Sequence[str]) -> Html:
    """The request's headers (credentials masked already) and its JSON body."""
    if not request:
        return Html("")
    headers = [f"{name}: {value}" for name, value in (request.get("headers") or {}).items() if name != "Content-Type"]
    body = json.dumps(request.get("json"), ensure_ascii=False, sort_keys=True, indent=2)
    return fmt(
        '<pre class="request">{lines}</pre>',
        lines=redact("\n".join([*headers, body]), secrets),
    )


def result_section(result: Mapping[str, Any], destinations: Mapping[str, str], secrets: Sequence[str]) -> Html:
    title = fmt("<h3>{h}</h3>", h=heading(result))
    if "invalid" in result:
        return title + fmt('<p class="error">refused at intake (dead-lettered): {r}</p>', r=result["invalid"])
    if "unavailable" in result:
        return title + fmt('<p class="error">not previewed: {r}</p>', r=result["unavailable"])
    rows = [
        (
            destinations.get(o["destination"], o["destination"]),
            fmt('<span class="verdict {v}">{w}</span>', v=o["verdict"], w=VERDICT_WORDS.get(o["verdict"], "")),
            redact(outcome_line(o), secrets),
            request_cell(o.get("request"), secrets),
        )
        for o in result["outcomes"]
    ]
    return title + table(
        ("destination", "verdict", "outcome", "headers and JSON body"),
        rows,
        empty="No destination is enabled.",
        cls="preview",
    )


def try_page(
    messages: str,
    *,
    csrf: str,
    worker: str,
    results: Sequence[Mapping[str, Any]] | None = None,
    error: str | None = None,
    destinations: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> Html:
    parts = [try_form(messages, csrf=csrf)]
    if error is not None:
        parts.insert(0, fmt('<p class="error" role="alert">{e}</p>', e=error))
    notice = None
    if results is not None:
        notice = f"Preview only: nothing was sent and nothing was written. {summary(results)}."
        parts.append(Html("<h2>What cs-relay would do now</h2>"))
        parts.extend(result_section(r, destinations or {}, secrets) for r in results)
    return layout("Try a message", join(parts), csrf=csrf, active="try", worker=worker, notice=notice)


def by_owner(
    locate: Callable[[str], Located],
    run: Callable[[Sequence[bytes]], list[dict[str, Any]]],
    http: Callable[[], aiohttp.ClientSession],
    token: str,
) -> Ask:
    """`Sources.preview` on a worker: a user's messages previewed here when this worker
    owns the user (`run`, `streams.runtime.previewing`), else by the owner's
    `POST /preview/{userId}` (`preview_api.ask_owner`, with the admin `token`)."""

    async def preview(key: str, raws: Sequence[bytes]) -> list[dict[str, Any]]:
        where = locate(key)
        if where.unavailable is not None:
            raise PreviewUnavailable(where.unavailable)
        if where.owner is None:
            return run(raws)
        return await ask_owner(http(), where.owner, key, raws, token)

    return preview


async def previews(ask: Ask, raws: Sequence[bytes]) -> list[dict[str, Any]]:
    """Each message's result, in input order: each user's messages by the worker that
    owns the user (users apart, concurrently), as `cs-relay preview --url` asks them."""
    by_user, results = per_user(raws)

    async def one(key: str, indexes: list[int]) -> None:
        try:
            answers = await ask(key, [raws[i] for i in indexes])
        except PreviewUnavailable as exc:
            for i in indexes:
                msg = parse(raws[i])
                results[i] = {
                    "index": i,
                    "call": describe_call(msg),
                    "user": key,
                    "messageId": msg.message_id,
                    "delivered": False,
                    "unavailable": str(exc),
                }
            return
        for i, answer in zip(indexes, answers, strict=True):
            results[i] = {**answer, "index": i}

    await asyncio.gather(*(one(key, indexes) for key, indexes in by_user.items()))
    return [results[i] for i in range(len(raws))]


async def form(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    return page(try_page("", csrf=console.csrf(session), worker=console.sources.worker))


async def preview(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    s = console.sources
    messages = str((await request.post()).get("messages") or "")
    csrf = console.csrf(session)

    def answer(status: int, **more: Any) -> web.StreamResponse:
        shown = messages if len(messages) <= MAX_BODY_BYTES else ""
        return page(try_page(shown, csrf=csrf, worker=s.worker, secrets=s.secrets, **more), status)

    try:
        if len(messages.encode("utf-8")) > MAX_BODY_BYTES:
            raise PreviewInputError(f"larger than {MAX_BODY_BYTES // 1024} KiB")
        raws = read_messages(messages)
        if len(raws) > MAX_MESSAGES:
            raise PreviewInputError(f"{len(raws)} messages: at most {MAX_MESSAGES} at a time")
    except PreviewInputError as exc:
        return answer(400, error=f"Nothing previewed: {exc}.")
    if s.preview is None:
        return text("previews are not available on this worker\n", 404)
    return answer(200, results=await previews(s.preview, raws), destinations=s.destinations)
