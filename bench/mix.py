"""The benchmark's traffic: a realistic mix of Segment calls, as pure functions.

`plan()` decides who sends what, in which order; `message()` turns one planned call
into the Segment message that is produced, stamped with its produce time. Nothing here
does I/O or reads the clock, so the mix can be tested (tests/test_bench_stats.py).

The mix (defaults): identify 5 %, group 2 %, track 70 %, page 23 %; 10,000 users in
500 groups (user `u` belongs to group `u % groups`).

* The plan opens with the *introductions*: one group call per group, by its first
  member. The benchmark delivers them before it measures anything (a warm-up), so
  every group is known by name when the measured calls arrive.
* The other calls are drawn at random over all users, with what is left of each
  type's count. Identify, track and page calls carry the user's `context.groupId`,
  as B2B tracking plans do, so they are attributable at once.
* Early events that must wait: of the users whose first group call is among those
  other calls, `early_share` send their calls before it without `context.groupId`
  (they do not know their account yet). Neither partner can attribute them, so
  cs-relay holds them and releases them when the user's own group call arrives.

Why not one group call per user: at 2 % group calls and a few calls per user there
are not enough (50,000 calls hold 1,000 group calls for 10,000 users). And why the
warm-up: a user's call that names a group another user introduces may be routed
before that group call (the two users' records are in different partitions, which
are consumed independently); ClientSuccess then holds it, and only that user's next
call releases it, which a user's last call in a benchmark never gets. `plan()`
refuses counts that leave fewer group calls than groups.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_SHARES: Mapping[str, float] = {"identify": 0.05, "group": 0.02, "track": 0.70, "page": 0.23}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TRACK_EVENTS = ("Report Built", "Dashboard Viewed", "Export Created", "Invite Sent", "Feature Used", "Search Run")
PAGE_NAMES = ("Dashboard", "Reports", "Settings", "Billing", "Team", None)  # None: "Loaded a Page"
PLANS = ("free", "team", "business", "enterprise")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@dataclass(frozen=True)
class Call:
    """One planned Segment call. `early`: sent before the user's group is known (no
    `context.groupId`), so it waits for the user's group call."""

    type: str
    user: int
    group: int
    variant: int  # picks the event name, page name or trait values
    early: bool = False
    # False: no `context.groupId` even when the group is known (bench.scenarios: calls
    # attributable by the user's earlier group call alone).
    context_group: bool = True


def split_counts(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """`total` split by `shares` (which need not sum to 1) into whole counts that add
    up to `total`: largest remainder first, ties in the order of `shares`."""
    if total < 0:
        raise ValueError("total must not be negative")
    weight = sum(shares.values())
    if weight <= 0 or any(s < 0 for s in shares.values()):
        raise ValueError("shares must be non-negative and not all zero")
    exact = {name: total * share / weight for name, share in shares.items()}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(shares, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def plan(
    calls: int,
    *,
    users: int = 10_000,
    groups: int = 500,
    shares: Mapping[str, float] = DEFAULT_SHARES,
    early_share: float = 0.5,
    seed: int = 1,
    introductions: bool = True,
) -> list[Call]:
    """`calls` calls in produce order (see the module docstring for the shape). With
    `introductions` the first `groups` calls introduce the groups; without, the groups
    are taken as known (a plan that continues another)."""
    if not 1 <= groups <= users:
        raise ValueError("need at least one group and no more groups than users")
    counts = split_counts(calls, shares)
    rng = random.Random(seed)
    planned: list[Call] = []
    if introductions:
        if counts.get("group", 0) < groups:
            raise ValueError(
                f"{calls} calls hold {counts.get('group', 0)} group calls, fewer than the {groups} groups: "
                f"plan more calls or fewer groups"
            )
        # User `group` is the first member of group `group` (user u is in group u % groups).
        planned = [Call("group", group, group, rng.randrange(1_000)) for group in rng.sample(range(groups), groups)]
        counts["group"] -= groups
    rest = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(rest)
    for kind in rest:
        user = rng.randrange(users)
        planned.append(Call(kind, user, user % groups, rng.randrange(1_000)))
    return _mark_early(planned, groups if introductions else 0, early_share, rng)


def _mark_early(planned: list[Call], introductions: int, share: float, rng: random.Random) -> list[Call]:
    """Mark, for `share` of the users whose first group call comes after the
    introductions, every call before that group call as early."""
    first_group_at: dict[int, int] = {}
    introduced = {call.user for call in planned[:introductions]}
    for index, call in enumerate(planned):
        if call.type == "group" and call.user not in introduced and call.user not in first_group_at:
            first_group_at[call.user] = index
    chosen = {user for user in sorted(first_group_at) if rng.random() < share}
    return [
        replace(call, early=True) if call.user in chosen and index < first_group_at[call.user] else call
        for index, call in enumerate(planned)
    ]


def user_id(user: int) -> str:
    return f"user-{user:06d}"


def group_id(group: int) -> str:
    return f"group-{group:05d}"


def iso_from_us(unix_us: int) -> str:
    """Unix microseconds as the ISO-8601 UTC timestamp Segment libraries send."""
    moment = EPOCH + timedelta(microseconds=unix_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us_from_iso(text: str) -> int:
    """An ISO-8601 timestamp (`Z` or an offset) as unix microseconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def message(call: Call, *, seq: int, run: str, produced_us: int, padding: int = 0) -> dict[str, Any]:
    """The Segment message for `call`. Its `timestamp` is the produce time (unique per
    message, to the microsecond: it identifies the event at the partners, whose
    requests carry it) and its `messageId` embeds the run, the sequence number and the
    produce time. `padding` adds that many characters of properties or traits."""
    variant = call.variant
    body: dict[str, Any] = {
        "type": call.type,
        "messageId": f"{run}-{seq}-{produced_us}",
        "userId": user_id(call.user),
        "timestamp": iso_from_us(produced_us),
        "context": _context(call),
    }
    if call.type == "identify":
        body["traits"] = {
            "firstName": f"First{call.user}",
            "lastName": f"Last{variant}",
            "email": f"{user_id(call.user)}@example.com",
            "plan": PLANS[variant % len(PLANS)],
        }
    elif call.type == "group":
        body["groupId"] = group_id(call.group)
        body["traits"] = {
            "name": f"Account {call.group}",
            "plan": PLANS[call.group % len(PLANS)],
            "employees": 10 + variant,
        }
    elif call.type == "track":
        body["event"] = TRACK_EVENTS[variant % len(TRACK_EVENTS)]
        body["properties"] = {"value": variant % 7 + 1, "product_id": "analytics", "module_id": "reports"}
    else:
        name = PAGE_NAMES[variant % len(PAGE_NAMES)]
        if name is not None:
            body["name"] = name
        body["properties"] = {"path": f"/{(name or 'home').lower()}", "title": name or "Home"}
    if padding > 0:
        body.setdefault("properties" if "properties" in body else "traits", {})["notes"] = "x" * padding
    return body


def _context(call: Call) -> dict[str, Any]:
    context: dict[str, Any] = {
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "ip": f"198.51.100.{call.user % 250 + 1}",
        "locale": "en-US",
        "userAgent": USER_AGENT,
    }
    if call.type in ("identify", "track", "page") and call.context_group and not call.early:
        context["groupId"] = group_id(call.group)
    return context
