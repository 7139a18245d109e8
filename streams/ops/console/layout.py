"""The frame of every console page (navigation, log-out form, footer), and the two
pages the dispatcher answers with itself: the login form and a message.
"""

from __future__ import annotations

from streams.ops.console.html import Html, fmt, hidden_csrf, join

NAV = (
    ("search", "Search", "/console"),
    ("destinations", "Destinations", "/console/destinations"),
    ("dead-letters", "Dead letters", "/console/dead-letters"),
    ("try", "Try a message", "/console/try"),
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
