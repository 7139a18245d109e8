"""The console's HTML pieces. Every value is escaped on its way in: `fmt()` escapes each
argument that is not already `Html` (a fragment built here), so a trait, an id or a
partner's error text is shown as text, never run or parsed as markup.

Pages are plain HTML with one stylesheet and one small script, both served by
cs-relay (`/console/static/`); no inline script, so the Content-Security-Policy can
forbid any other (see `responses.SECURITY_HEADERS`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote


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
