"""The anonymous merge: a visitor who logs in (an identify with both ids, or an alias)
becomes the user, in two partitions.

1. `route`, in the user's partition, sends a `merge-request` to the anonymous key;
2. there, `give_profile` empties the anonymous profile, marks it `merged_into` the user
   (its later events are forwarded to the user), keeps a copy of what it hands over
   (`handing`) and sends the profile and its waiting events to the user in a
   `merge-profile` record;
3. in the user's partition, `take_profile` folds them in, releases what the merged
   state can attribute, and once those writes are in Kafka sends `merge-done`;
4. in the anonymous partition, `handed` forgets the copy.

Every step survives a crash at any moment and is idempotent when processed again
(issue 16, item 3): until merge-done the profile is kept in the anonymous partition,
and a merge-request processed again sends it again; the user folds each hand-over in
once (`UserState.adopted`), and the same merge-profile record processed again numbers
its events as before (`streams.core.pending.adopt`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from streams.core import pendingrows
from streams.core.control import MergeDone, MergeProfile, MergeRequest
from streams.core.incoming import Incoming
from streams.core.outcome import DeadLetter
from streams.core.pending import Pending, first_seq
from streams.core.reasons import Reason
from streams.core.state import UserState
from streams.core.step import merge_step
from streams.runtime import effects, routing
from streams.runtime.runtime import Runtime

# A hand-over (the merge-profile record, and its copy on the visitor's row until
# merge-done) is at most this many bytes: well below the topics' 1 MiB record limit.
HANDOVER_MAX_BYTES = 512 * 1024


def give_profile(rt: Runtime, record: Incoming, request: MergeRequest) -> list[Awaitable[Any]]:
    """In the anonymous profile's partition: hand the profile and its waiting events to
    the user it logged in as, and forward this key's later events there."""
    assert record.key is not None  # control records to a user are keyed by the user
    anonymous_id = record.key.decode("utf-8")
    anonymous = rt.rows.user(anonymous_id)
    if anonymous is not None and anonymous.merged_into:
        if anonymous.merged_into != request.into:
            # Merged into another user before: nothing to hand over, but the asking user
            # waits for an answer (its events wait behind the visitor's until then).
            return [effects.control_to_user(rt, request.into, MergeProfile(anonymous_id, None, None))]
        if anonymous.handing is None:
            return []  # merged already, and folded in (a repeated request)
        # Handed over, not confirmed yet: the record may have been lost (a crash
        # before Kafka had it). Again; the user folds it in once.
        return [effects.control_to_user(rt, request.into, MergeProfile.from_body(anonymous.handing))]
    user = anonymous.to_dict() if anonymous else None
    waiting = pendingrows.without(rt.rows.pending(anonymous_id), request.cut)
    waiting, cut = pendingrows.fit(waiting, HANDOVER_MAX_BYTES - len(json.dumps(user)) - 256)
    if cut:
        # Too large for one record: the newest events go to the dead-letter topic first,
        # and only once Kafka has them is the rest handed over (a request sent to this
        # key again, naming them). Nothing changes here before that, so a crash between
        # the two finds the visitor as it was and cuts again.
        return [_cut_then_ask(rt, anonymous_id, request, cut)]
    profile = MergeProfile(anonymous_id, user, waiting.to_dict())
    rt.tables.users[anonymous_id] = UserState(
        key=anonymous_id, merged_into=request.into, handing=profile.body()
    ).to_dict()
    rt.rows.store_pending(anonymous_id, Pending())
    rt.counters["merged.anonymous"] += 1
    return [effects.control_to_user(rt, request.into, profile)]


async def _cut_then_ask(rt: Runtime, anonymous_id: str, request: MergeRequest, cut: list[tuple[str, Any]]) -> None:
    rt.counters["merge.cut"] += len(cut)
    await asyncio.gather(
        *(
            effects.dead_letter(
                rt,
                DeadLetter(
                    Reason.PENDING_OVERFLOW,
                    f"the visitor's waiting events did not fit in one hand-over of {HANDOVER_MAX_BYTES} bytes when "
                    f"it logged in as {request.into!r}; the newest went here: replay them (cs-relay dlq replay) to "
                    "deliver them as that user",
                    entry.raw,
                    entry.source,
                    "routing",
                    dest,
                    f"{dest}#{entry.seq}",  # the same when the request is processed again
                ),
                anonymous_id.encode("utf-8"),
            )
            for dest, entry in cut
        )
    )
    slots = (*request.cut, *((dest, entry.seq) for dest, entry in cut))
    await effects.control_to_user(rt, anonymous_id, MergeRequest(request.into, slots))


def take_profile(rt: Runtime, record: Incoming, profile: MergeProfile) -> list[Awaitable[Any]]:
    """In the user's partition: fold the anonymous profile in and release what it allows."""
    assert record.key is not None  # control records to a user are keyed by the user
    key = record.key.decode("utf-8")
    known = rt.rows.user(key)
    if profile.user is None and profile.pending is None and (known is None or known.merging != profile.anonymous_id):
        return []  # "merged into another user" for a user not waiting for it: nothing to do
    user = known or UserState(key=key, user_id=key)
    adopted_at = user.adopted.get(profile.anonymous_id)
    if adopted_at is not None and adopted_at != record.position:
        # A hand-over sent again: the first one, earlier in this partition, was folded in.
        return [confirm(rt, key, profile.anonymous_id, [])]
    anonymous = UserState.from_dict(profile.user) if profile.user else None
    pending = rt.rows.pending(key)
    result = merge_step(
        user,
        pending,
        anonymous,
        Pending.from_dict(profile.pending),
        profile.anonymous_id,
        rt.groups.of(user),
        rt.destinations,
        first_seq(record.position),
        record.position,
        rt.settings.pending_max_events,
    )
    work = routing.apply_step(rt, key, pending, result)
    # merge-done only once Kafka has the user's new rows (this event's changelog writes).
    return [*work, confirm(rt, key, profile.anonymous_id, rt.changelog.collected())]


async def confirm(rt: Runtime, key: str, anonymous_id: str, writes: list[Awaitable[Any]]) -> None:
    if writes:
        await asyncio.gather(*writes)
    await effects.control_to_user(rt, anonymous_id, MergeDone(into=key))


def handed(rt: Runtime, record: Incoming, done: MergeDone) -> list[Awaitable[Any]]:
    """In the anonymous partition: the user folded the profile in; forget the copy."""
    assert record.key is not None
    anonymous_id = record.key.decode("utf-8")
    anonymous = rt.rows.user(anonymous_id)
    if anonymous is not None and anonymous.merged_into == done.into and anonymous.handing is not None:
        rt.tables.users[anonymous_id] = replace(anonymous, handing=None).to_dict()
    return []
