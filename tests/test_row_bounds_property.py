"""No sequence of valid Segment calls grows a state row past its bound (issue 22, finding 1).

Hypothesis draws sequences of calls with ids, names, traits and properties at the
extremes of what intake accepts (ids at MAX_ID_BYTES, characters that the tables store
escaped at up to 6 bytes each, traits filling a 32 KB call), from a few users and
visitors who log in, and runs them through the pure core as the worker does: `step`,
the hand-over (`pendingrows.fit`, `merge_step`), the group's own record and waiters,
aggregation windows, parked and released deliveries. After every call each row the
worker would write is encoded as the tables store it and checked against its bound.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings, target
from hypothesis import strategies as st

from streams.core import dedupe, pendingrows
from streams.core.aggregate import WINDOWS_MAX_BYTES, Windows, fold_within
from streams.core.control import MergeProfile
from streams.core.grouplookup import with_copy
from streams.core.idlimits import MAX_ID_BYTES, MAX_NAME_BYTES
from streams.core.message import InvalidMessage, Message
from streams.core.outcome import Dispatch
from streams.core.pending import Parked, Pending, confirm, first_seq, park, parked_full
from streams.core.pendingrows import INDEX_MAX_BYTES, index_row, payload_key
from streams.core.reducers import apply_to_group
from streams.core.releasing import release_ready
from streams.core.segment import MAX_MESSAGE_BYTES, parse
from streams.core.state import GroupState, UserState
from streams.core.step import merge_step, step
from streams.core.traits import stored_size
from streams.core.waiters import WAITERS_MAX_BYTES, Waiters, add
from streams.destinations import REGISTRY
from streams.runtime import wiring
from streams.runtime.merge import HANDOVER_MAX_BYTES
from streams.runtime.topics import RECORD_LIMIT
from streams.settings import Settings

MAX_EVENTS = 6  # small, so that the queues' bounds are reached within an example
# Every row, its key and value as the tables store them, stays below this: well under
# the changelog topics' max.message.bytes (RECORD_LIMIT), leaving room for headers.
ROW_MAX_BYTES = 900 * 1024
# The tighter bounds the code keeps for some rows (the key is counted beside them).
BOUNDS = {"pending": INDEX_MAX_BYTES, "waiters": WAITERS_MAX_BYTES, "windows": WINDOWS_MAX_BYTES + 4096}


def _settings() -> Settings:
    mappings = Path(tempfile.mkdtemp(prefix="cs-relay-bounds-")) / "mappings.toml"
    # consent: each user's and group's record also keeps what calls consent kept from
    # ClientSuccess and CustomerSuccessBox did not show them (streams.core.consent)
    mappings.write_text(
        '[clientsuccess]\naggregate = "1h"\nconsent = ["analytics"]\n\n'
        '[customersuccessbox]\nconsent = ["analytics", "advertising"]\n'
    )
    return Settings.from_env(
        {
            "CLIENTSUCCESS_SOURCE_ID": "src",
            "CLIENTSUCCESS_API_KEY": "k",
            "CSB_API_KEY": "k",
            "CSB_BASE_URL": "http://127.0.0.1:9",
            "WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "WEBHOOK_WAIT_FOR_GROUP": "true",
            "CS_RELAY_PENDING_MAX_EVENTS": str(MAX_EVENTS),
            "CS_RELAY_MAPPINGS": str(mappings),
        }
    )


SETTINGS = _settings()
DESTINATIONS = wiring.destinations(SETTINGS)
MEMORIES = wiring.memories()
SIZES = {d.key: d.window for d in DESTINATIONS if d.window}
assert len(DESTINATIONS) == len(REGISTRY)  # every registered destination takes part

# Characters by how they are stored: as they are, escaped (6 bytes for 1 in UTF-8),
# and non-ASCII (6 or 12 bytes for 2 to 4 in UTF-8).
CHARS = st.sampled_from(["a", "\x01", '"', "é", "中", "😀"])


@st.composite
def text(draw: Any, limit: int, tag: str = "") -> str:
    """A string of at most `limit` UTF-8 bytes, often at the limit, starting with `tag`."""
    char = draw(CHARS)
    room = (limit - len(tag.encode())) // len(char.encode())
    count = draw(st.sampled_from([0, 1, room // 2, room]) | st.integers(0, room))
    return tag + char * count


def an_id(tag: str) -> st.SearchStrategy[str]:
    return text(MAX_ID_BYTES, tag)


USERS = st.integers(0, 2)
VISITORS = st.integers(0, 2)
# A few groups used again and again, and new ones: ids at their longest.
GROUPS = st.one_of(st.integers(0, 2).map(lambda n: f"g{n}"), st.integers(0, 10**6).flatmap(lambda n: an_id(f"n{n}-")))


def user_id(n: int) -> str:
    return f"u{n}-" + "\x01" * (MAX_ID_BYTES - 3)


def visitor_id(n: int) -> str:
    return f"a{n}-" + "é" * ((MAX_ID_BYTES - 3) // 2)


TRAIT_BYTES = 9000  # three of these in one call stay near MAX_MESSAGE_BYTES


def traits() -> st.SearchStrategy[dict[str, Any]]:
    fields = st.sampled_from(["name", "firstName", "lastName", "email", "account_id", "user_id", "plan"])
    many = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=40)
    return st.one_of(st.dictionaries(fields, text(TRAIT_BYTES), max_size=3), many)


CALL = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("identify"), "user": USERS, "visitor": st.none() | VISITORS, "traits": traits()}
    ),
    st.fixed_dictionaries({"type": st.just("group"), "user": USERS, "groupId": GROUPS, "traits": traits()}),
    st.fixed_dictionaries(
        {
            "type": st.just("track"),
            "user": st.none() | USERS,
            "visitor": VISITORS,
            "event": st.one_of(st.sampled_from(["E1", "E2"]), text(MAX_NAME_BYTES, "e")),
            "groupId": st.none() | GROUPS,
            "properties": traits(),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("page"), "user": st.none() | USERS, "visitor": VISITORS, "name": text(MAX_NAME_BYTES, "p")}
    ),
    st.fixed_dictionaries({"type": st.just("alias"), "user": USERS, "visitor": VISITORS}),
)
# What happens to each delivery a call starts: confirmed, parked (the partner fails),
# or still on its way (it stays `releasing`).
FATE = st.sampled_from(["done", "park", "in flight"])


def message(call: dict[str, Any], n: int) -> bytes:
    body: dict[str, Any] = {"type": call["type"], "messageId": f"m{n}"}
    if call.get("user") is not None:
        body["userId"] = user_id(call["user"])
    visitor = call.get("visitor")
    if visitor is not None and call["type"] == "alias":
        body["previousId"] = visitor_id(visitor)
    elif visitor is not None:
        body["anonymousId"] = visitor_id(visitor)
    for name in ("traits", "properties", "event", "name", "groupId"):
        if name in call and call[name] is not None:
            body[name] = call[name]
    if call["type"] in ("track", "page") and call.get("groupId"):
        body["context"] = {"groupId": body.pop("groupId")}
    if n % 3:  # two calls in three say what the user consented to, alternately denying
        prefs = {"analytics": n % 2 == 0, "advertising": n % 4 == 1}
        body["context"] = {**body.get("context", {}), "consent": {"categoryPreferences": prefs}}
    return json.dumps(body, ensure_ascii=False).encode()


@dataclass
class World:
    """The tables of the worker, as plain dicts of what each row holds."""

    users: dict[str, UserState] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)
    waiters: dict[str, Waiters] = field(default_factory=dict)
    windows: dict[str, Windows] = field(default_factory=dict)
    rows: int = 0
    largest: dict[str, int] = field(default_factory=dict)

    def check(self, table: str, key: str, value: Any) -> None:
        size = stored_size(key) + stored_size(value)
        self.rows += 1
        self.largest[table] = max(self.largest.get(table, 0), size)
        assert size <= min(ROW_MAX_BYTES, BOUNDS.get(table, ROW_MAX_BYTES) + stored_size(key)), (table, size)

    def write_pending(self, key: str, before: Pending, after: Pending) -> None:
        put, _gone = pendingrows.changes(before, after)
        for (dest, seq), row in put.items():
            self.check("payloads", payload_key(key, dest, seq), row)
        self.check("pending", key, index_row(after))
        # what makes the index row's bound hold at any CS_RELAY_PENDING_MAX_EVENTS
        # start-up accepts (pendingrows.worst_index_bytes): no queue longer than it
        for queue in after.queues.values():
            counts = (len(queue.held), len(queue.releasing), len(queue.parked))
            assert max(counts) <= MAX_EVENTS, counts
        self.pending[key] = after

    def write_user(self, key: str, user: UserState) -> None:
        self.check("users", key, user.to_dict())
        self.users[key] = user

    def deliver(self, key: str, dispatches: list[Dispatch], fate: str, position: int) -> None:
        """What the delivery tasks do: confirm a released event, or park the delivery."""
        before = pending = self.pending.get(key, Pending())
        for i, d in enumerate(dispatches):
            if fate == "done" and d.released_seq is not None:
                pending = confirm(pending, d.destination, d.released_seq)
            elif fate == "park":
                seq = first_seq(position) + i
                if parked_full(pending, d.destination, MAX_EVENTS, d.released_seq, seq):
                    continue  # dead-lettered as pending_overflow
                failed = Parked(0, d.raw, d.source, d.request.to_dict(), d.message_id, 1.0, 3, 2.0, "x" * 2000)
                pending = park(pending, d.destination, failed, d.released_seq, seq)
        self.write_pending(key, before, pending)


def route(w: World, msg: Message, raw: str, position: int, fate: str, now: float) -> None:
    key = msg.key
    while key in w.users and w.users[key].merged_into:  # a visitor who logged in: forwarded
        key = w.users[key].merged_into or key
    w.check("seen", dedupe.row_key(key, msg.message_id), dedupe.row(position, now))
    before = w.pending.get(key, Pending())
    user = w.users.get(key)
    result = step(
        key,
        msg,
        raw,
        {"topic": "in", "partition": 0, "offset": position},
        user,
        before,
        w.groups.get,
        DESTINATIONS,
        now=now,
        now_iso=f"2026-11-30T10:{position % 60:02d}:00+00:00",
        max_pending=MAX_EVENTS,
        max_pending_age=7 * 24 * 3600.0,
        memories=MEMORIES,
        seq=first_seq(position),
    )
    w.write_user(key, result.user)
    w.write_pending(key, before, result.pending)
    folds = result.folds
    if folds:
        windows, alone = fold_within(w.windows.get(key, Windows()), folds, at=now, sizes=SIZES, offset=position)
        w.check("windows", key, windows.to_dict())
        w.windows[key] = windows
        assert all(stored_size(f.request.to_dict()) < RECORD_LIMIT for f in alone)
    w.deliver(key, result.dispatches, fate, position)
    if result.group is not None:  # the group's own partition: its record, and its waiters told
        group = apply_to_group(w.groups.get(result.group.group_id), msg, result.group.updated_at or "", MEMORIES)
        w.check("groups", group.group_id, group.to_dict())
        w.groups[group.group_id] = group
        for waiting in w.waiters.pop(group.group_id, Waiters()).users:
            known(w, waiting, fate, position)
    if result.wait_for is not None:
        group_id, seen = result.wait_for
        waiters, _ = add(w.waiters.get(group_id, Waiters()), key, seen)
        w.check("waiters", group_id, waiters.to_dict())
        w.waiters[group_id] = waiters
    if result.merge_from is not None:
        merge(w, key, result.merge_from, position)


def known(w: World, key: str, fate: str, position: int) -> None:
    """A group-known record in a waiting user's partition: release what it attributes."""
    user = w.users.get(key)
    if user is None or user.merged_into:
        return
    before = pending = w.pending.get(key, Pending())
    released: list[Dispatch] = []
    for dest in DESTINATIONS:
        pending, out = release_ready(pending, dest, user, with_copy(w.groups.get, user), MAX_EVENTS)
        released += out
    w.write_pending(key, before, pending)
    w.deliver(key, released, fate, position)


def merge(w: World, key: str, visitor: str, position: int) -> None:
    """The hand-over, in the visitor's partition and then in the user's."""
    profile_user = w.users.get(visitor)
    if profile_user is not None and profile_user.merged_into:
        return
    data = profile_user.to_dict() if profile_user else None
    waiting = w.pending.get(visitor, Pending())
    waiting, _cut = pendingrows.fit(waiting, HANDOVER_MAX_BYTES - len(json.dumps(data)) - 256)
    profile = MergeProfile(visitor, data, waiting.to_dict())
    assert stored_size(profile.body()) < RECORD_LIMIT  # the merge-profile record
    w.write_user(visitor, UserState(key=visitor, merged_into=key, handing=profile.body()))
    w.write_pending(visitor, w.pending.get(visitor, Pending()), Pending())
    before = w.pending.get(key, Pending())
    user = w.users.get(key) or UserState(key=key, user_id=key)
    anonymous = UserState.from_dict(profile.user) if profile.user else None
    result = merge_step(
        user,
        before,
        anonymous,
        Pending.from_dict(profile.pending),
        visitor,
        with_copy(w.groups.get, user),
        DESTINATIONS,
        first_seq(position) + 1000,
        position,
        MAX_EVENTS,
    )
    w.write_user(key, result.user)
    w.write_pending(key, before, result.pending)


@settings(
    max_examples=50,  # about 3 s
    deadline=None,  # an example runs up to 60 calls over rows of hundreds of KB: no per-example limit
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples in every run: a fixed, modest runtime
    # no shrinking: a failing example of rows this large takes minutes to shrink;
    # the assertion names the table and the size
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
)
@given(st.lists(st.tuples(CALL, FATE), min_size=1, max_size=60))
def test_no_sequence_of_valid_calls_grows_a_row_past_its_bound(calls: list[tuple[dict[str, Any], str]]) -> None:
    w = World()
    for n, (call, fate) in enumerate(calls):
        data = message(call, n)
        try:
            msg = parse(data)  # what intake accepts
        except InvalidMessage:
            assert len(data) > MAX_MESSAGE_BYTES, data[:200]  # only the size can refuse these calls
            continue
        route(w, msg, data.decode(), position=100 + n, fate=fate, now=1_780_000_000.0 + n)
    for table, size in w.largest.items():
        target(float(size), label=table)  # steer the search towards the largest rows
    assert w.rows > 0


def test_the_largest_rows_seen_under_hostile_sequences_stay_in_their_bounds() -> None:
    """A fixed hostile sequence (finding 1): new long groups, long traits, many visitors
    logging in with full queues, many distinct long events, through every row."""
    w = World()
    big = "é" * (TRAIT_BYTES // 2)  # 9,000 bytes in the call, 27,000 stored
    n = 0
    for round_ in range(40):
        for call in (
            {"type": "group", "user": 0, "groupId": f"n{round_}-" + "\x01" * 250, "traits": {"name": big}},
            {"type": "identify", "user": 0, "visitor": None, "traits": {"name": big, "account_id": big}},
            {"type": "track", "user": 0, "visitor": None, "event": f"e{round_}" + "é" * 250, "properties": {}},
            {"type": "track", "user": None, "visitor": round_ % 3, "event": "E1", "properties": {"user_id": big}},
            {"type": "alias", "user": 0, "visitor": round_ % 3},
        ):
            data = message(call, n)
            route(w, parse(data), data.decode(), position=100 + n, fate="in flight", now=1_780_000_000.0 + n)
            n += 1
    # a visitor with a full queue logs in as a user whose own queue is not empty
    for call in [
        *({"type": "track", "user": None, "visitor": 3, "event": f"V{i}", "properties": {}} for i in range(8)),
        *({"type": "track", "user": 1, "visitor": None, "event": f"U{i}", "properties": {}} for i in range(4)),
        {"type": "alias", "user": 1, "visitor": 3},
    ]:
        data = message(call, n)
        route(w, parse(data), data.decode(), position=100 + n, fate="in flight", now=1_780_000_000.0 + n)
        n += 1
    assert len(w.pending[user_id(1)].queue("clientsuccess").held) == MAX_EVENTS
    assert w.largest["users"] > 100 * 1024 and w.largest["windows"] > 100 * 1024, w.largest
