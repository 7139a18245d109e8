"""The dead letters page, `/console/dead-letters[?reason=]`: the recent dead letters of
every worker, read from the dead-letter topic (`streams.ops.console.deadletters`),
previews redacted of secrets, with a form to pick some for replay (`replay.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from streams.core.deadletter import DeadLetterRecord
from streams.ops.console.html import Html, age, fmt, hidden_csrf, join, link, path, table, when
from streams.ops.console.layout import layout
from streams.ops.console.responses import int_or_none, page
from streams.ops.console.session import Session
from streams.ops.dlq import redacted_preview

if TYPE_CHECKING:
    from streams.ops.console.web import Console


@dataclass(frozen=True)
class DeadLetterView:
    """A dead letter as the page shows it: the record read from the dead-letter topic,
    its redacted preview, and when this worker's console replayed it."""

    record: DeadLetterRecord
    preview: str
    replays: Sequence[float] = ()

    @property
    def identity(self) -> str:
        return self.record.identity or ""


def _failed_at(record: DeadLetterRecord) -> str:
    try:
        return when(datetime.fromisoformat(record.headers.get("failed-at", "")).timestamp())
    except ValueError:
        return record.headers.get("failed-at", "")


def dead_letter_row(view: DeadLetterView, now: float, *, selectable: bool) -> list[Any]:
    r = view.record
    h = r.headers
    where = f"{r.partition}:{r.offset}"
    box = fmt(
        '<input type="checkbox" name="id" value="{i}" aria-label="select dead letter {w}">', i=view.identity, w=where
    )
    user = r.key.decode("utf-8", "replace") if r.key else None
    replayed = (
        f"replayed {age(now - view.replays[-1])} ago" + (f" ({len(view.replays)}×)" if len(view.replays) > 1 else "")
        if view.replays
        else ""
    )
    row = [
        where,
        _failed_at(r),
        r.reason,
        h.get("stage", ""),
        h.get("destination", ""),
        h.get("status", ""),
        link(path("users", user), user) if user else "",
        h.get("detail", ""),
        fmt("<code>{p}</code>", p=view.preview),
        replayed,
    ]
    return ([box] if selectable else []) + row


DEAD_HEADERS = (
    "partition:offset",
    "failed at",
    "reason",
    "stage",
    "destination",
    "HTTP",
    "user",
    "detail",
    "preview (redacted)",
    "replay",
)


def dead_letters_page(
    views: Sequence[DeadLetterView],
    reasons: Sequence[str],
    reason: str | None,
    *,
    now: float,
    csrf: str,
    worker: str,
    notice: str | None,
    topic: str,
    per_partition: int,
    complete: bool,
    error: str | None,
) -> Html:
    options = join(
        [fmt('<option value="">every reason</option>')]
        + [
            fmt('<option value="{r}"{sel}>{r}</option>', r=r, sel=Html(" selected") if r == reason else Html(""))
            for r in reasons
        ]
    )
    filt = fmt(
        '<form method="get" action="/console/dead-letters" class="filter"><label for="reason">reason</label>'
        '<select id="reason" name="reason">{options}</select><button type="submit">Filter</button></form>',
        options=options,
    )
    rows = [dead_letter_row(v, now, selectable=True) for v in views]
    listing = table(
        ("",) + DEAD_HEADERS,
        rows,
        empty=f"The dead-letter topic {topic} could not be read now ({error}); try again."
        if error
        else "No dead letters in the topic's recent records" + (f" with reason {reason}." if reason else "."),
        cls="dead-letters",
    )
    actions = Html("")
    if rows:
        actions = fmt(
            '<div class="actions"><button type="submit" name="scope" value="selected">Replay selected…</button>'
            '<button type="submit" name="scope" value="filter">Replay all {n} shown…</button></div>',
            n=len(rows),
        )
    form = fmt(
        '<form method="post" action="/console/dead-letters/confirm">{csrf}'
        '<input type="hidden" name="reason" value="{reason}">{listing}{actions}</form>',
        csrf=hidden_csrf(csrf),
        reason=reason or "",
        listing=listing,
        actions=actions,
    )
    cut = (
        Html("")
        if complete or error
        else Html(" Older ones, or some cut by the size or time bound, are not shown: <code>cs-relay dlq list</code>.")
    )
    note = fmt(
        '<p class="note">The most recent dead letters of every worker, read from the dead-letter topic '
        "<code>{topic}</code> (the last {n} of each partition), newest first.{cut} Replay sends a dead letter "
        "back to the input topic as <code>cs-relay dlq replay</code> does: routed again even though its "
        "messageId was seen, only to the destination that refused it, and naming the dead letter, so one "
        "replayed again (here or with the CLI) is dropped as a duplicate. Fix the cause first.</p>",
        topic=topic,
        n=per_partition,
        cut=cut,
    )
    return layout(
        "Dead letters", join([filt, note, form]), csrf=csrf, active="dead-letters", worker=worker, notice=notice
    )


PREVIEW_WIDTH = 160


def dead_letter_views(console: Console, records: Iterable[DeadLetterRecord]) -> list[DeadLetterView]:
    s = console.sources
    return [
        DeadLetterView(r, redacted_preview(r, s.secrets, PREVIEW_WIDTH), s.journal.replays(r.identity)) for r in records
    ]


async def dead_letters(
    console: Console, request: web.Request, session: Session, notice: str | None = None
) -> web.StreamResponse:
    s = console.sources
    reason = request.query.get("reason") or None
    replayed = int_or_none(request.query.get("replayed"))
    if notice is None and replayed is not None:
        notice = f"Replayed {replayed} dead letter(s) to {s.input_topic or 'the input topic'}."
        missing = int_or_none(request.query.get("missing"))
        if missing:
            notice += f" {missing} selected are no longer among the recent ones (use cs-relay dlq replay)."
    recent = await console.recent.get()
    return page(
        dead_letters_page(
            dead_letter_views(console, recent.with_reason(reason)),
            recent.reasons(),
            reason,
            now=s.clock(),
            csrf=console.csrf(session),
            worker=s.worker,
            notice=notice,
            topic=recent.topic,
            per_partition=recent.per_partition,
            complete=recent.complete,
            error=recent.error,
        )
    )
