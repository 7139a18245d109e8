"""Replaying dead letters from the console: `POST /console/dead-letters/confirm` shows
what a replay would send, `POST /console/dead-letters/replay` sends it (both with the
session's CSRF token), through `streams.ops.dlq.replay_records` as `cs-relay dlq replay`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from streams.ops.console.html import Html, fmt, hidden_csrf, join, path, table
from streams.ops.console.layout import layout
from streams.ops.console.pages.deadletters import (
    DEAD_HEADERS,
    DeadLetterView,
    dead_letter_row,
    dead_letter_views,
    dead_letters,
)
from streams.ops.console.responses import page, see_other
from streams.ops.console.session import Session

if TYPE_CHECKING:
    from streams.ops.console.web import Console

log = logging.getLogger(__name__)


def confirm_page(views: Sequence[DeadLetterView], reason: str | None, *, now: float, csrf: str, worker: str) -> Html:
    rows = [dead_letter_row(v, now, selectable=False) for v in views]
    ids = join(fmt('<input type="hidden" name="id" value="{i}">', i=v.identity) for v in views)
    again = sum(1 for v in views if v.replays)
    warning = join(
        [
            fmt("<p>Replay these {n} dead letter(s) to the input topic?</p>", n=len(rows)),
            fmt(
                '<p class="note">{k} of them already replayed from this console: the worker drops a second '
                "replay of the same dead letter as a duplicate (it is delivered once).</p>",
                k=again,
            )
            if again
            else Html(""),
        ]
    )
    form = fmt(
        '<form method="post" action="/console/dead-letters/replay">{csrf}{ids}'
        '<input type="hidden" name="reason" value="{reason}">'
        '<button type="submit" id="confirm-replay" class="danger">Replay {n} dead letter(s)</button> '
        '<a href="{back}">Cancel</a></form>',
        csrf=hidden_csrf(csrf),
        ids=ids,
        n=len(rows),
        reason=reason or "",
        back=path("dead-letters", reason=reason),
    )
    body = join([warning, table(DEAD_HEADERS, rows, empty="Nothing selected.", cls="dead-letters"), form])
    return layout("Confirm replay", body, csrf=csrf, active="dead-letters", worker=worker)


async def confirm(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    reason = str(form.get("reason") or "") or None
    recent = await console.recent.get()
    if form.get("scope") == "filter":
        records = recent.with_reason(reason)
    else:
        records, _ = recent.by_identity([str(v) for v in form.getall("id", [])])
    if not records:
        return await dead_letters(console, request, session, notice="Select at least one dead letter to replay.")
    return page(
        confirm_page(
            dead_letter_views(console, records),
            reason,
            now=console.sources.clock(),
            csrf=console.csrf(session),
            worker=console.sources.worker,
        )
    )


async def replay(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """Replay the dead letters the confirmation names (by identity in the topic)."""
    s = console.sources
    form = await request.post()
    records, missing = (await console.recent.get()).by_identity([str(v) for v in form.getall("id", [])])
    replayed = await s.replay(records) if records else 0
    now = s.clock()
    for record in records:
        if record.identity:
            s.journal.replayed(record.identity, now)
    log.info("console: replayed %d dead letter(s) (%d no longer among the recent ones)", replayed, missing)
    return see_other(
        path("dead-letters", reason=str(form.get("reason") or ""), replayed=replayed, missing=missing or None)
    )
