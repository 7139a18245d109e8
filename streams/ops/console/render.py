"""The console's HTML. Every value is escaped on its way in: `fmt()` escapes each
argument that is not already `Html` (a fragment built here), so a trait, an id or a
partner's error text is shown as text, never run or parsed as markup.

Pages are plain HTML with one stylesheet and one small script, both served by
cs-relay (`/console/static/`); no inline script, so the Content-Security-Policy can
forbid any other (see `web.SECURITY_HEADERS`).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from streams.core.deadletter import DeadLetterRecord
from streams.ops.console.journal import OUTCOME_WORDS, RATE_KINDS, Delivery


class Html(str):
    """Markup built by this module: inserted as it is. Adding text to it escapes the text."""

    def __add__(self, other: Any) -> Html:
        return Html(str.__add__(self, esc(other)))


def esc(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def fmt(template: str, **values: Any) -> Html:
    """`template` (trusted, written here) with every value escaped."""
    return Html(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def path(*segments: str, **query: Any) -> str:
    """A console URL with every segment percent-encoded (an id may hold `/`, `?`, `#`)."""
    url = "/console/" + "/".join(quote(s, safe="") for s in segments)
    params = [(k, v) for k, v in query.items() if v not in (None, "")]
    if params:
        url += "?" + "&".join(f"{quote(k)}={quote(str(v), safe='')}" for k, v in params)
    return url


# ------------------------------------------------------------------ small pieces


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str, cls: str = "") -> Html:
    rows = list(rows)
    if not rows:
        return fmt('<p class="empty">{empty}</p>', empty=empty)
    head = join(fmt("<th>{h}</th>", h=h) for h in headers)
    body = join(Html("<tr>" + join(fmt("<td>{c}</td>", c=c) for c in row) + "</tr>") for row in rows)
    return fmt(
        '<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
        cls=cls,
        head=head,
        body=body,
    )


def link(href: str, text: Any) -> Html:
    return fmt('<a href="{href}">{text}</a>', href=href, text=text)


def mapping_table(data: Mapping[str, Any], *, empty: str, cls: str = "") -> Html:
    return table(("name", "value"), ((k, value_text(v)) for k, v in sorted(data.items())), empty=empty, cls=cls)


def hidden_csrf(csrf: str) -> Html:
    return fmt('<input type="hidden" name="csrf" value="{csrf}">', csrf=csrf)


# ------------------------------------------------------------------ layout

NAV = (
    ("search", "Search", "/console"),
    ("destinations", "Destinations", "/console/destinations"),
    ("dead-letters", "Dead letters", "/console/dead-letters"),
)


def layout(
    title: str,
    body: Html,
    *,
    csrf: str | None,
    active: str = "",
    worker: str = "",
    notice: str | None = None,
    refresh: bool = False,
) -> Html:
    nav = (
        join(
            fmt(
                '<a href="{href}" class="{cls}">{label}</a>',
                href=href,
                label=label,
                cls="active" if key == active else "",
            )
            for key, label, href in NAV
        )
        if csrf
        else Html("")
    )
    logout = (
        fmt(
            '<form method="post" action="/console/logout" class="logout">{csrf}'
            '<button type="submit">Log out</button></form>',
            csrf=hidden_csrf(csrf),
        )
        if csrf
        else Html("")
    )
    auto = (
        Html('<label class="auto"><input type="checkbox" id="auto-refresh"> refresh every 5 s</label>')
        if refresh
        else Html("")
    )
    note = fmt('<p class="notice" role="status">{n}</p>', n=notice) if notice else Html("")
    return fmt(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} · cs-relay console</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head>'
        '<body><header><span class="brand">cs-relay console</span><nav>{nav}</nav>{auto}{logout}</header>'
        "<main><h1>{title}</h1>{note}{body}</main>"
        "<footer>served by {worker}</footer></body></html>",
        title=title,
        nav=nav,
        logout=logout,
        auto=auto,
        note=note,
        body=body,
        worker=worker or "this worker",
    )


def login_page(error: str | None = None) -> Html:
    err = fmt('<p class="error" role="alert">{e}</p>', e=error) if error else Html("")
    body = fmt(
        '{err}<form method="post" action="/console/login" class="login">'
        '<label for="token">Admin token (CS_RELAY_ADMIN_TOKEN)</label>'
        '<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>'
        '<button type="submit">Log in</button></form>',
        err=err,
    )
    return layout("Log in", body, csrf=None)


def message_page(title: str, text: str, *, csrf: str | None, worker: str = "") -> Html:
    return layout(
        title,
        fmt('<p class="empty">{t}</p><p><a href="/console">Back to search</a></p>', t=text),
        csrf=csrf,
        worker=worker,
    )


# ------------------------------------------------------------------ search


def search_form(q: str = "") -> Html:
    return fmt(
        '<form method="get" action="/console/search" class="search">'
        '<label for="q">userId, anonymousId, groupId or CustomerSuccessBox account id</label>'
        '<input type="search" id="q" name="q" value="{q}" required>'
        '<button type="submit">Find</button></form>',
        q=q,
    )


def search_page(q: str, matches: Sequence[tuple[str, str, str]], *, csrf: str, worker: str) -> Html:
    """`matches`: (what, id, href)."""
    results = Html("")
    if q:
        results = fmt("<h2>Matches for {q}</h2>", q=q) + table(
            ("what", "id"),
            ((what, link(href, ident)) for what, ident, href in matches),
            empty="Nothing known by that id on this worker (a user key is looked up on the worker that owns it).",
            cls="matches",
        )
    body = search_form(q) + results
    return layout("Search", Html(body), csrf=csrf, active="search", worker=worker)


# ------------------------------------------------------------------ user


def event_summary(raw: str) -> str:
    try:
        msg = json.loads(raw)
    except ValueError:
        return "(unreadable)"
    if not isinstance(msg, dict):
        return "(unreadable)"
    kind = msg.get("type", "?")
    name = msg.get("event") or msg.get("name") or ""
    return f"{kind} {name}".strip() + f" · {msg.get('messageId', '')}"


def pending_section(pending: Mapping[str, Any], destinations: Mapping[str, str], now: float) -> Html:
    queues = (pending or {}).get("queues") or {}
    rows = []
    for dest, queue in sorted(queues.items()):
        name = destinations.get(dest, dest)
        for state in ("held", "releasing"):
            for item in queue.get(state) or ():
                rows.append(
                    (
                        name,
                        Html(f'<span class="state {state}">{state}</span>'),
                        item.get("seq"),
                        event_summary(item.get("raw", "")),
                        age(now - float(item.get("held_at", now))),
                        "",
                        "",
                    )
                )
        for item in queue.get("parked") or ():
            rows.append(
                (
                    name,
                    Html('<span class="state parked">parked</span>'),
                    item.get("seq"),
                    event_summary(item.get("raw", "")),
                    age(now - float(item.get("first_failed_at", now))),
                    item.get("attempts", 0),
                    f"{item.get('last_error', '')} (next try in {age(float(item.get('next_at', now)) - now)})",
                )
            )
    return table(
        ("destination", "state", "seq", "event", "age", "attempts", "last error"),
        rows,
        empty="No events waiting: nothing held, releasing or parked.",
        cls="pending",
    )


def deliveries_table(deliveries: Sequence[Delivery], destinations: Mapping[str, str], now: float) -> Html:
    return table(
        ("time", "age", "destination", "event", "status", "HTTP"),
        (
            (
                when(d.at),
                age(now - d.at),
                destinations.get(d.destination, d.destination),
                d.message_id,
                Html(f'<span class="outcome {esc(d.outcome)}">{esc(d.words + (" (retry)" if d.retry else ""))}</span>'),
                d.status if d.status is not None else "no answer",
            )
            for d in deliveries
        ),
        empty="No deliveries for this user since this worker started.",
        cls="deliveries",
    )


def slots_table(slots: Mapping[str, Mapping[str, Any]], destinations: Mapping[str, str]) -> Html:
    rows = [
        (destinations.get(dest, dest), name, value_text(value))
        for dest, slot in sorted((slots or {}).items())
        for name, value in sorted((slot or {}).items())
    ]
    return table(
        ("destination", "remembers", "value"), rows, empty="No ids remembered by any destination.", cls="slots"
    )


def user_page(
    key: str,
    user: Mapping[str, Any],
    pending: Mapping[str, Any] | None,
    deliveries: Sequence[Delivery],
    *,
    destinations: Mapping[str, str],
    now: float,
    csrf: str,
    worker: str,
    partition: int | None,
) -> Html:
    group_id = user.get("group_id")
    facts: list[tuple[str, Any]] = [
        ("user key", key),
        ("userId", user.get("user_id") or "(anonymous)"),
        ("group", link(path("groups", group_id), group_id) if group_id else "(none yet)"),
        ("groups seen", join((link(path("groups", g), g) for g in user.get("groups") or ()), ", ") or "(none)"),
        ("first seen", user.get("first_seen") or ""),
        ("last seen", user.get("last_seen") or ""),
    ]
    if user.get("anonymous_ids"):
        facts.append(("anonymous ids merged", join((link(path("users", a), a) for a in user["anonymous_ids"]), ", ")))
    if user.get("merged_into"):
        facts.append(("merged into", link(path("users", user["merged_into"]), user["merged_into"])))
    if partition is not None:
        facts.append(("partition", partition))
    body = join(
        [
            table(("", ""), facts, empty="", cls="facts"),
            Html("<h2>Traits</h2>"),
            mapping_table(user.get("traits") or {}, empty="No traits.", cls="traits"),
            Html("<h2>Remembered ids per destination</h2>"),
            slots_table(user.get("slots") or {}, destinations),
            Html("<h2>Waiting events</h2>"),
            pending_section(pending or {}, destinations, now),
            Html("<h2>Recent deliveries</h2>"),
            deliveries_table(deliveries, destinations, now),
        ]
    )
    return layout(f"User {key}", body, csrf=csrf, active="search", worker=worker, refresh=True)


# ------------------------------------------------------------------ group


def group_page(
    group_id: str,
    group: Mapping[str, Any] | None,
    users: Sequence[tuple[str, float]],
    *,
    destinations: Mapping[str, str],
    now: float,
    csrf: str,
    worker: str,
) -> Html:
    if group is None:
        head = fmt('<p class="empty">No group call for {g} has been seen yet.</p>', g=group_id)
    else:
        head = join(
            [
                table(
                    ("", ""),
                    [
                        ("groupId", group_id),
                        ("name", group.get("name") or "(no name)"),
                        ("updated", group.get("updated_at") or ""),
                    ],
                    empty="",
                    cls="facts",
                ),
                Html("<h2>Traits</h2>"),
                mapping_table(group.get("traits") or {}, empty="No traits.", cls="traits"),
                Html("<h2>Remembered ids per destination</h2>"),
                slots_table(group.get("slots") or {}, destinations),
            ]
        )
    members = table(
        ("user", "last seen in this group"),
        ((link(path("users", u), u), age(now - at) + " ago") for u, at in users),
        empty="No user of this group was routed on this worker since it started.",
        cls="members",
    )
    body = join([head, Html("<h2>Users seen in it on this worker</h2>"), members])
    return layout(f"Group {group_id}", body, csrf=csrf, active="search", worker=worker)


# ------------------------------------------------------------------ destinations

CHART_W, CHART_H, PAD = 640, 180, 36


def rate_chart(points: Sequence[tuple[float, Mapping[str, float]]], *, now: float, span: float, title: str) -> Html:
    """An SVG line chart of per-minute rates over the last `span` seconds."""
    top = max([v for _, rates in points for v in rates.values()] + [1.0])
    top = _nice(top)
    x = lambda t: PAD + (CHART_W - 2 * PAD) * (1 - (now - t) / span)  # noqa: E731
    y = lambda v: CHART_H - PAD + (-(CHART_H - 2 * PAD) * v / top)  # noqa: E731
    lines = []
    for kind in RATE_KINDS:
        coords = " ".join(f"{x(t):.1f},{y(rates.get(kind, 0.0)):.1f}" for t, rates in points)
        if coords:
            lines.append(
                fmt(
                    '<polyline class="line {kind}" points="{c}"><title>{kind} per minute</title></polyline>',
                    kind=kind,
                    c=coords,
                )
            )
            t, rates = points[-1]  # the latest rate as a dot: visible even while the series is short
            lines.append(
                fmt(
                    '<circle class="dot {kind}" cx="{x}" cy="{y}" r="3"><title>{kind}: {v}/min now</title></circle>',
                    kind=kind,
                    x=f"{x(t):.1f}",
                    y=f"{y(rates.get(kind, 0.0)):.1f}",
                    v=f"{rates.get(kind, 0.0):.1f}",
                )
            )
    grid = join(
        [
            fmt('<line class="axis" x1="{a}" y1="{b}" x2="{c}" y2="{b}"/>', a=PAD, b=CHART_H - PAD, c=CHART_W - PAD),
            fmt('<line class="grid" x1="{a}" y1="{b}" x2="{c}" y2="{b}"/>', a=PAD, b=PAD, c=CHART_W - PAD),
            fmt('<text x="{a}" y="{b}" class="label">{t}/min</text>', a=2, b=PAD - 4, t=_num(top)),
            fmt('<text x="{a}" y="{b}" class="label">0</text>', a=PAD - 12, b=CHART_H - PAD + 4),
            fmt('<text x="{a}" y="{b}" class="label">-60 min</text>', a=PAD, b=CHART_H - PAD + 16),
            fmt('<text x="{a}" y="{b}" class="label">-30 min</text>', a=CHART_W / 2 - 20, b=CHART_H - PAD + 16),
            fmt('<text x="{a}" y="{b}" class="label">now</text>', a=CHART_W - PAD - 12, b=CHART_H - PAD + 16),
        ]
    )
    legend = join(fmt('<span class="key {k}">{label}</span>', k=k, label=k.replace("_", "-")) for k in RATE_KINDS)
    empty = Html("") if points else Html('<text x="200" y="90" class="label">no samples yet (one every 15 s)</text>')
    return fmt(
        '<figure class="chart"><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}">'
        "{grid}{lines}{empty}</svg><figcaption>{legend}</figcaption></figure>",
        w=CHART_W,
        h=CHART_H,
        title=title,
        grid=grid,
        lines=join(lines),
        empty=empty,
        legend=legend,
    )


def _nice(value: float) -> float:
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent  # pragma: no cover


def _num(value: float) -> str:
    return f"{value:g}"


def destinations_page(
    status: Mapping[str, Any],
    rates: Mapping[str, Sequence[tuple[float, Mapping[str, float]]]],
    *,
    now: float,
    span: float,
    csrf: str,
    worker: str,
) -> Html:
    dests = status.get("destinations") or {}
    rows = [
        (
            d.get("name", key),
            d.get("delivered", 0),
            d.get("retrying", 0),
            d.get("held", 0),
            d.get("releasing", 0),
            d.get("dead_lettered", 0),
        )
        for key, d in dests.items()
    ]
    summary = table(
        ("destination", "delivered", "parked (retrying)", "held", "releasing", "dead-lettered"),
        rows,
        empty="No destination is enabled on this worker.",
        cls="destinations",
    )
    charts = join(
        fmt("<h2>{name}: per minute, last hour</h2>", name=d.get("name", key))
        + rate_chart(rates.get(key, ()), now=now, span=span, title=f"{d.get('name', key)} rates")
        for key, d in dests.items()
    )
    lag = (status.get("consumer_lag") or {}).get("total", 0)
    note = fmt(
        '<p class="note">Counts are this worker\'s since it started; waiting events are those of the '
        "users in its partitions. Consumer lag: {lag} records. Dead letters without a destination "
        "(intake, routing): {other}.</p>",
        lag=lag,
        other=status.get("dead_lettered_without_destination", 0),
    )
    return layout(
        "Destinations", join([summary, note, charts]), csrf=csrf, active="destinations", worker=worker, refresh=True
    )


# ------------------------------------------------------------------ dead letters


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


__all__ = ["Html", "esc", "fmt", "path", "OUTCOME_WORDS", "DeadLetterView"]
