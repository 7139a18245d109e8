"""The benchmark's scenarios (issue 13, item 4), as pure data and arithmetic.

Each scenario is measured in one run of `python -m bench`, on the same broker and the
same mock partners, and reported as ratios of figures taken in that run:

* **a** the default mix (`bench.mix`): cs-relay's backlog throughput against the bare
  consumer and the bare aiohttp client, and the paced phase's latency;
* **b** an all-attributable track backlog: every user's group call first (a warm-up),
  then tracks spread evenly over the users, without `context.groupId` (each is
  attributable by its user's group call): cs-relay against the naive relay
  (`bench.naive`) and the bare aiohttp client sending the same requests;
* **c** the same shape with 50 ms of latency at both mocks: cs-relay's request rate
  against the in-flight bound (`CS_RELAY_MAX_IN_FLIGHT` per partner / latency), with
  the naive relay and the bare client under the same latency;
* **d** heavy users (20 x 1,000 tracks) against light users (10,000 x 2 tracks): the
  rate ratio, state bytes per user and the largest changelog record;
* **e** one worker against two on the same topic (the track backlog of b);
* **f** worker memory and state size after `--million-users` distinct users, one
  track each (not in the default run: it takes about half an hour today);
* **g** one user's burst (6,000 tracks, then 12,000) followed by one track from each of
  200 other users, 50 ms of latency at both mocks, produced while the worker runs: the
  time from the last produce until the last other user's track is delivered, for both
  burst sizes, and how it grows with the burst (issue 23).

`--scale` multiplies the sizes of b to e (users and tracks; d's heavy users keep their
number and scale their tracks, light users scale their number) and g's bursts (its 200
other users stay). Nothing here does I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.mix import Call

ALL = ("a", "b", "c", "d", "e", "f", "g")
DEFAULT = ("a", "b", "c", "d", "e", "g")
TITLES = {
    "a": "default mix",
    "b": "attributable track backlog",
    "c": "50 ms partner latency",
    "d": "heavy vs light users",
    "e": "one worker vs two",
    "f": "state after many users",
    "g": "one user's burst",
}
# The targets quoted next to each figure (one worker, this 2-core machine): issue 23's,
# which kept issue 13's for a and d (docs/benchmarks.md's table quotes these, checked by
# tests/test_bench_scenarios.py).
TARGETS = {
    "a": "p99 produce-to-partner latency under 100 ms at half the measured capacity",
    "b": "at least 1.0x the naive relay on asyncio with the input keyed in place; at least 0.9x with "
    "--by-user-hop (cs-relay's default settings)",
    "c": "at least 80 % of the in-flight bound",
    "d": "heavy users at least 90 % of light users' rate; no record above the configured bound",
    "e": "report as measured; on 2 cores with the mocks on the same machine a second worker may not add much",
    "f": "1,000,000 users drained within --timeout 2400, RSS under 300 MB",
    "g": "every other user's track delivered within 10 s of the last produce",
}
LATENCY_MS = 50.0  # scenario c, at both mocks
NAIVE_TRACKS_UNDER_LATENCY = 200  # the naive relay does ~10 tracks/s at 50 ms: c gives it fewer
BURSTS = (6_000, 12_000)  # scenario g: one user's tracks, at scale 1.0
OTHER_USERS = 200  # scenario g: one track each, after the burst


def parse_choice(text: str) -> tuple[str, ...]:
    """`a,b,c` as ("a", "b", "c"), in the order of ALL; ValueError for unknown names."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown or not names:
        raise ValueError(f"--scenarios takes a comma-separated choice of {','.join(ALL)} (got {text!r})")
    return tuple(name for name in ALL if name in names)


@dataclass(frozen=True)
class TrackPlan:
    """A warm-up of one group call per user, then `per_user` tracks of each user in a
    shuffled order, none with `context.groupId` (unless `context_group`). User `u` is
    in group `u % groups`."""

    users: int
    per_user: int
    groups: int
    seed: int = 1
    first_user: int = 0  # plans of one run use disjoint users
    context_group: bool = False

    @property
    def tracks(self) -> int:
        return self.users * self.per_user

    def warm_up(self) -> list[Call]:
        rng = random.Random(self.seed)
        return [Call("group", u, u % self.groups, rng.randrange(1_000)) for u in self._users()]

    def backlog(self) -> list[Call]:
        rng = random.Random(self.seed + 1)
        users = [u for u in self._users() for _ in range(self.per_user)]
        rng.shuffle(users)
        return [
            Call("track", u, u % self.groups, rng.randrange(1_000), context_group=self.context_group) for u in users
        ]

    def _users(self) -> range:
        return range(self.first_user, self.first_user + self.users)


@dataclass(frozen=True)
class ManyUsersPlan:
    """Scenario f: `groups` group introductions (by users 0..groups-1), then one track
    per user for `users` users, each naming its group in `context.groupId` (no group
    call per user: a million of them would double the run)."""

    users: int
    groups: int = 500
    seed: int = 1

    def warm_up(self) -> list[Call]:
        return [Call("group", g, g, g % 1_000) for g in range(self.groups)]

    def backlog(self) -> list[Call]:
        rng = random.Random(self.seed)
        return [Call("track", u, u % self.groups, rng.randrange(1_000)) for u in range(self.users)]


@dataclass(frozen=True)
class BurstPlan:
    """Scenario g: a warm-up of one group call per user (the bursting user
    `first_user`, then `others` more), then `burst` tracks of the bursting user
    followed by one track of each other user, in that order, none with
    `context.groupId`. User `u` is in group `u % groups`."""

    burst: int
    others: int = OTHER_USERS
    groups: int = 50
    seed: int = 1
    first_user: int = 0

    @property
    def users(self) -> int:
        return 1 + self.others

    @property
    def tracks(self) -> int:
        return self.burst + self.others

    def warm_up(self) -> list[Call]:
        rng = random.Random(self.seed)
        return [Call("group", u, u % self.groups, rng.randrange(1_000)) for u in self._users()]

    def backlog(self) -> list[Call]:
        """The burst, then the others' tracks: `backlog()[burst:]` are the others'."""
        rng = random.Random(self.seed + 1)
        users = [self.first_user] * self.burst + list(self._users())[1:]
        return [Call("track", u, u % self.groups, rng.randrange(1_000), context_group=False) for u in users]

    def _users(self) -> range:
        return range(self.first_user, self.first_user + self.users)


def growth_per_thousand(points: Sequence[tuple[int, float]]) -> float:
    """Seconds added per 1,000 more burst events between the smallest and the largest
    of `points` ((burst, seconds)); NaN with fewer than two burst sizes."""
    if len({burst for burst, _ in points}) < 2:
        return math.nan
    (small, t_small), (large, t_large) = min(points), max(points)
    return (t_large - t_small) / (large - small) * 1_000


def _scaled(value: int, scale: float, at_least: int = 1) -> int:
    return max(at_least, round(value * scale))


def plans(
    scale: float = 1.0, million_users: int = 1_000_000
) -> dict[str, Mapping[str, TrackPlan | ManyUsersPlan | BurstPlan]]:
    """The plans of scenarios b to g at `scale` (1.0: the sizes of issues 13 and 23),
    each with its own users so that one run's relays never share a user id."""
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError("--scale must be a positive number")
    b_users = _scaled(2_000, scale, 10)
    c_users = _scaled(1_000, scale, 10)
    heavy = TrackPlan(20, _scaled(1_000, scale, 2), groups=20, first_user=100_000)
    light = TrackPlan(_scaled(10_000, scale, 10), 2, groups=500, first_user=200_000)
    return {
        "b": {"tracks": TrackPlan(b_users, 10, groups=min(500, b_users), first_user=0)},
        "c": {
            "tracks": TrackPlan(c_users, 10, groups=min(500, c_users), first_user=20_000),
            "naive": TrackPlan(
                NAIVE_TRACKS_UNDER_LATENCY // 10, 10, groups=NAIVE_TRACKS_UNDER_LATENCY // 10, first_user=40_000
            ),
        },
        "d": {"heavy": heavy, "light": light},
        "e": {"tracks": TrackPlan(b_users, 10, groups=min(500, b_users), first_user=60_000)},
        "f": {"users": ManyUsersPlan(million_users)},
        "g": {
            f"burst_{i + 1}": BurstPlan(_scaled(burst, scale, 2), first_user=300_000 + 1_000 * i)
            for i, burst in enumerate(BURSTS)
        },
    }


# ------------------------------------------------------------------ arithmetic


def ratio(measured: float, reference: float) -> float:
    """`measured` / `reference`, NaN without a reference (0.42 is 42 %)."""
    return measured / reference if reference > 0 and math.isfinite(reference) else math.nan


def median_index(values: Sequence[float]) -> int:
    """Where the median of `values` is (of an even count, the lower middle one); NaN
    counts as lowest. ValueError for none."""
    if not values:
        raise ValueError("no values")
    order = sorted(range(len(values)), key=lambda i: (not math.isnan(values[i]), values[i]))
    return order[(len(values) - 1) // 2]


def in_flight_bound(max_in_flight: int, latency_s: float) -> float:
    """Requests per second per partner that `max_in_flight` requests in flight allow
    when each takes `latency_s`: 64 / 0.05 s = 1,280."""
    if latency_s <= 0:
        raise ValueError("latency must be positive")
    return max_in_flight / latency_s


def bound_share(requests_per_partner_per_s: Mapping[str, float], bound_per_partner: float) -> float:
    """The share of the in-flight bound reached: the partners' mean request rate over
    the bound (each partner has its own `max_in_flight`)."""
    rates = list(requests_per_partner_per_s.values())
    return ratio(sum(rates) / len(rates), bound_per_partner) if rates else math.nan


def per_user(total_bytes: float, users: int) -> float:
    if users <= 0:
        raise ValueError("users must be positive")
    return total_bytes / users


def largest(sizes: Mapping[str, int]) -> tuple[str, int]:
    """The topic with the largest record and its size; ("", 0) for none."""
    return max(sizes.items(), key=lambda item: item[1], default=("", 0))


def percent(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1%}"


def speed(value: float | None) -> str:
    """The cores' speed of a drain or phase (`stats.machine_speed`) as shown: n/a without
    the probe's samples."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def summary_lines(scenarios: Mapping[str, Mapping[str, object]], order: Sequence[str] = ALL) -> list[str]:
    """One line per scenario: its headline ratio and its target, for the console."""
    lines = []
    for name in order:
        if name in scenarios:
            headline = scenarios[name].get("headline", "")
            lines.append(f"  ({name}) {TITLES[name]:<28} {headline}")
            lines.append(f"      target: {TARGETS[name]}")
    return lines
