"""A user's page, `/console/users/{key}`: traits, group, remembered ids, waiting
events and recent deliveries. Served by the worker that owns the user's partition: asked
of another worker, it is forwarded there with the admin token and the session id
(`SESSION_HEADER`), never the browser's cookie.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from streams.ops.console.html import Html, age, esc, join, link, mapping_table, path, table, value_text, when
from streams.ops.console.journal import Delivery
from streams.ops.console.layout import layout, message_page
from streams.ops.console.responses import ROUTED_HEADER, SECURITY_HEADERS, page
from streams.ops.console.session import SESSION_HEADER, Session

if TYPE_CHECKING:
    from streams.ops.console.web import Console


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


async def user(console: Console, request: web.Request, session: Session, key: str) -> web.StreamResponse:
    s = console.sources
    csrf = console.csrf(session)
    where = s.locate(key)
    if where.unavailable is not None:
        return page(message_page("Try again", where.unavailable, csrf=csrf, worker=s.worker), 503)
    if where.owner is not None:
        if request.headers.get(ROUTED_HEADER):
            return page(
                message_page("Try again", "Partition ownership is moving; try again.", csrf=csrf, worker=s.worker),
                503,
            )
        response = await s.forward(request, where.owner, {SESSION_HEADER: session.sid})
        response.headers.update(SECURITY_HEADERS)
        return response
    data = s.users.get(key)
    if data is None:
        return page(
            message_page(
                f"User {key}",
                f"No user {key!r} is known: no call with this userId or anonymousId has arrived.",
                csrf=csrf,
                worker=s.worker,
            ),
            404,
        )
    return page(
        user_page(
            key,
            data,
            s.pending.get(key),
            s.journal.deliveries(key),
            destinations=s.destinations,
            now=s.clock(),
            csrf=csrf,
            worker=s.worker,
            partition=where.partition,
        )
    )
