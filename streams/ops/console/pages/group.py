"""A group's page, `/console/groups/{groupId}`: its traits (groups are in every
worker) and the users seen in it on this worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from streams.ops.console.html import Html, age, fmt, join, link, mapping_table, path, table
from streams.ops.console.layout import layout
from streams.ops.console.pages.user import slots_table
from streams.ops.console.responses import page
from streams.ops.console.session import Session

if TYPE_CHECKING:
    from streams.ops.console.web import Console


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


async def group(console: Console, request: web.Request, session: Session, group_id: str) -> web.StreamResponse:
    s = console.sources
    data = s.groups.get(group_id)
    users = s.journal.users_in_group(group_id)
    status = 200 if data is not None or users else 404
    return page(
        group_page(
            group_id,
            data,
            users,
            destinations=s.destinations,
            now=s.clock(),
            csrf=console.csrf(session),
            worker=s.worker,
        ),
        status,
    )
