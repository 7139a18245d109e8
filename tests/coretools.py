"""Helpers over the pure core that only tests use: kept here, not in the production
modules (issue 24, item 7). Each does what the function of the same name did there."""

from __future__ import annotations

import json

from streams.core import dedupe
from streams.core.breaker import Breakers
from streams.core.dedupe import Seen, Verdict, prune
from streams.core.pending import Parked, Pending


def dedupe_check(
    seen: Seen,
    message_id: str,
    offset: int,
    now: float,
    *,
    window: float,
    max_ids: int,
    replay: bool = False,
    replay_of: str | None = None,
) -> tuple[Verdict, Seen]:
    """Classify a record against a user's `Seen` record (the per-user format older
    versions wrote) and return the record with it remembered (and pruned). A replayed
    dead letter (`replay_of`: its identity) is classified by that identity instead of
    its messageId; a `replay` without one is never a duplicate."""
    if replay_of is not None:
        verdict = dedupe._classify(seen.replays.get(replay_of), offset, now, window)
        if verdict is Verdict.DUPLICATE:
            return verdict, seen
        replays = {**seen.replays, replay_of: (offset, now)}
        return verdict, prune(Seen(seen.ids, replays), now, window=window, max_ids=max_ids)
    verdict = dedupe._classify(seen.ids.get(message_id), offset, now, window)
    if verdict is Verdict.DUPLICATE and not replay:
        return verdict, seen
    if verdict is Verdict.DUPLICATE:
        verdict = Verdict.REDELIVERED
    ids = {**seen.ids, message_id: (offset, now)}
    return verdict, prune(Seen(ids, seen.replays), now, window=window, max_ids=max_ids)


def pending_due(pending: Pending, now: float) -> list[tuple[str, Parked]]:
    """The parked heads whose retry time has come, per destination."""
    return [(dest, q.parked[0]) for dest, q in pending.queues.items() if q.parked and q.parked[0].next_at <= now]


def breaker_states(breakers: Breakers) -> dict[str, str]:
    """Each destination's circuit state, by name."""
    return {dest: str(b.state) for dest, b in breakers.items()}


def user_of_payload_key(key: str) -> str:
    """The user of a payload row's key (`streams.core.pendingrows.payload_key`)."""
    return str(json.loads(key)[0])
