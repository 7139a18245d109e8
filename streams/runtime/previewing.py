"""The worker's side of `cs-relay preview` and the console's "Try a message": the
messages of one user run through the pure step against this worker's tables, with its
destinations and settings (`streams.core.preview`). Reads only: nothing is written,
sent or counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.core.pending import Pending
from streams.core.preview import preview
from streams.core.state import GroupState, UserState
from streams.runtime.runtime import Runtime
from streams.runtime.wiring import request_view


class _Source:
    """What a preview reads of this worker (`streams.core.preview.StateSource`)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def user(self, key: str) -> UserState | None:
        return self.rt.rows.user(key)

    def pending(self, key: str) -> Pending:
        return self.rt.rows.pending(key)

    def group(self, group_id: str) -> GroupState | None:
        return self.rt.groups.get(group_id)


def run(rt: Runtime, raws: Sequence[bytes]) -> list[dict[str, Any]]:
    """Each message's outcomes as this worker would decide them now (the caller checks
    that this worker owns the messages' user)."""
    results = preview(
        raws,
        rt.destinations,
        _Source(rt),
        now=rt.clock(),
        max_pending=rt.settings.pending_max_events,
        max_pending_age=rt.settings.pending_max_age_seconds,
        memories=rt.memories,
        blocked=lambda key: frozenset(d.key for d in rt.destinations if rt.parking.marks.parking[(key, d.key)] > 0),
    )
    render = request_view(rt.settings)
    return [r.to_dict(render) for r in results]
