"""The search page: `/console` and `/console/search?q=ID` (a userId, anonymousId,
groupId or CustomerSuccessBox account id); straight to the user when that is all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from streams.ops.console.html import Html, fmt, link, path, table
from streams.ops.console.layout import layout
from streams.ops.console.responses import page, see_other
from streams.ops.console.session import Session

if TYPE_CHECKING:
    from streams.ops.console.web import Console


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


async def home(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    return page(search_page("", [], csrf=console.csrf(session), worker=console.sources.worker))


async def search(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    q = request.query.get("q", "").strip()
    if not q:
        return see_other("/console")
    s = console.sources
    matches: list[tuple[str, str, str]] = []
    if s.groups.get(q) is not None:
        matches.append(("group", q, path("groups", q)))
    for kind, ident, _at in s.journal.with_account(q):
        matches.append((f"{kind} with account id {q}", ident, path(f"{kind}s", ident)))
    where = s.locate(q)
    user_here = where.owner is None and where.unavailable is None and s.users.get(q) is not None
    if where.owner is not None and not matches:
        # Kept by another worker: its page there says whether the user exists.
        return see_other(path("users", q))
    if user_here:
        if not matches:
            return see_other(path("users", q))
        matches.insert(0, ("user", q, path("users", q)))
    elif where.owner is not None:
        matches.append(("user key (kept by another worker)", q, path("users", q)))
    return page(search_page(q, matches, csrf=console.csrf(session), worker=s.worker))
