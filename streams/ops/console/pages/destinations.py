"""The destinations page, `/console/destinations`: each destination's counts (from
`/status`) and an SVG chart of this worker's rates over the last hour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from streams.ops.console.html import Html, fmt, join, table
from streams.ops.console.layout import layout
from streams.ops.console.rates import CHART_SECONDS, RATE_KINDS
from streams.ops.console.responses import page
from streams.ops.console.session import Session

if TYPE_CHECKING:
    from streams.ops.console.web import Console


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
            d.get("skipped_for_consent", 0),
        )
        for key, d in dests.items()
    ]
    summary = table(
        ("destination", "delivered", "parked (retrying)", "held", "releasing", "dead-lettered", "kept by consent"),
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


async def destinations(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    s = console.sources
    now = s.clock()
    rates = s.journal.rates(now, current=s.counts())
    return page(
        destinations_page(s.status(), rates, now=now, span=CHART_SECONDS, csrf=console.csrf(session), worker=s.worker)
    )
