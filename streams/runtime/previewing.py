"""The worker's side of `cs-relay preview` and the console's "Try a message": the
messages of one user run through the pure step against this worker's tables, with its
destinations and settings (`streams.core.preview`). Reads only: nothing is written,
sent or counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.core.preview import preview
from streams.runtime.runtime import Runtime
from streams.runtime.wiring import request_view


def run(rt: Runtime, raws: Sequence[bytes]) -> list[dict[str, Any]]:
    """Each message's outcomes as this worker would decide them now (the caller checks
    that this worker owns the messages' user)."""
    results = preview(
        raws,
        rt.destinations,
        rt,
        now=rt.clock(),
        max_pending=rt.settings.pending_max_events,
        max_pending_age=rt.settings.pending_max_age_seconds,
        memories=rt.memories,
        blocked=lambda key: frozenset(d.key for d in rt.destinations if rt.parking.marks.parking[(key, d.key)] > 0),
    )
    render = request_view(rt.settings)
    return [r.to_dict(render) for r in results]
