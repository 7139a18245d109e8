"""Scenarios b to g of the benchmark (`bench.scenarios`), run on the broker and mocks of
the run (scenario a is `bench.scenario_a.Bench`). Each measurement is a drain
(`bench.drain`); the rate is the tracks delivered (both partners have them) over the
time from the first partner request of the backlog to the last; the worker's CPU, peak
memory and data dir are read as in scenario a. Scenario g is measured on a running
worker instead (`bench.burst`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import burst, scenarios, stats
from bench.drain import CS_RELAY, NAIVE, NAIVE_UVLOOP, Drains
from bench.harness import (
    MEASURED,
    add_latency,
    reset_mocks,
)
from bench.scenarios import BurstPlan, TrackPlan
from streams.runtime.topics import RECORD_LIMIT


@dataclass
class Suite(Drains):
    """Scenarios b to g on the run's broker (`bootstrap`) and `mocks`; files under `work`."""

    b_relay: dict[str, Any] | None = None  # b's reported cs-relay drain: e's one worker

    def __post_init__(self) -> None:
        self.plans = scenarios.plans(self.args.scale, self.args.million_users)
        self.max_in_flight = self.args.http_concurrency

    # ------------------------------------------------------------------ scenarios

    async def run(self, chosen: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in chosen:
            if name == "a":
                continue
            print(f"scenario {name}: {scenarios.TITLES[name]}", flush=True)
            started = time.monotonic()
            out[name] = await getattr(self, f"scenario_{name}")()
            out[name]["title"] = scenarios.TITLES[name]
            out[name]["target"] = scenarios.TARGETS[name]
            out[name]["wall_seconds"] = round(time.monotonic() - started, 1)
            print("\n".join(scenarios.summary_lines({name: out[name]})), flush=True)
        return out

    async def scenario_b(self) -> dict[str, Any]:
        plan = self.plans["b"]["tracks"]
        # cs-relay against the naive relay as a team writes it (asyncio's default loop: the
        # baseline), `--repeat` rounds one after the other, each round's order the reverse of
        # the last's; the round of the median ratio is reported, every round's figures kept.
        rounds = []
        for n in range(self.args.repeat):
            tag = f"-{n + 1}" if n else ""
            pair = [(f"b-cs-relay{tag}", CS_RELAY), (f"b-naive{tag}", NAIVE)]
            got = {}
            for label, kind in pair if n % 2 == 0 else pair[::-1]:
                profile_it, keep_jobs = self.args.profile and n == 0, n == 0 and kind == CS_RELAY
                got[kind] = await self.drain(label, kind, plan, profile_it=profile_it, keep_jobs=keep_jobs)
            rounds.append(got)
        jobs = rounds[0][CS_RELAY].pop("_jobs")
        by_round = [scenarios.ratio(r[CS_RELAY]["events_per_second"], r[NAIVE]["events_per_second"]) for r in rounds]
        relay, naive = (rounds[scenarios.median_index(by_round)][k] for k in (CS_RELAY, NAIVE))
        self.b_relay = relay
        naive_uvloop = await self.drain("b-naive-uvloop", NAIVE_UVLOOP, plan)
        http = await self.http_ceiling(jobs)
        vs_http = scenarios.ratio(relay["requests_per_second"], http["requests_per_second"])
        vs_naive = scenarios.ratio(relay["events_per_second"], naive["events_per_second"])
        vs_naive_uvloop = scenarios.ratio(relay["events_per_second"], naive_uvloop["events_per_second"])
        naive_vs_http = scenarios.ratio(naive["requests_per_second"], http["requests_per_second"])
        return {
            "plan": _plan(plan),
            "cs_relay": relay,
            "naive": naive,
            "naive_uvloop": naive_uvloop,
            "plain_http": http,
            "rounds": [_round_figures(r, ratio) for r, ratio in zip(rounds, by_round, strict=True)],
            "profiles": _profiles(rounds[0]),
            "ratios": {
                "cs_relay_vs_plain_http": _round(vs_http),
                "cs_relay_vs_naive": _round(vs_naive),
                "cs_relay_vs_naive_uvloop": _round(vs_naive_uvloop),
                "naive_vs_plain_http": _round(naive_vs_http),
                "cs_relay_vs_naive_cpu_per_event": _round(
                    scenarios.ratio(relay["cpu_ms_per_event"], naive["cpu_ms_per_event"])
                ),
                "naive_uvloop_vs_naive": _round(
                    scenarios.ratio(naive_uvloop["events_per_second"], naive["events_per_second"])
                ),
            },
            "headline": f"cs-relay {relay['events_per_second']:,.0f} tracks/s = {scenarios.percent(vs_http)} of the "
            f"bare aiohttp client ({http['requests_per_second']:,.0f} requests/s), {vs_naive:.2f}x the naive relay "
            f"on asyncio ({naive['events_per_second']:,.0f} tracks/s; {_spread(by_round, 'x')}), "
            f"{vs_naive_uvloop:.2f}x it on uvloop ({naive_uvloop['events_per_second']:,.0f}); CPU per track "
            f"{relay['cpu_ms_per_event']:.2f} ms vs {naive['cpu_ms_per_event']:.2f} ms and "
            f"{naive_uvloop['cpu_ms_per_event']:.2f} ms; cs-relay on {relay['event_loop']}",
        }

    async def scenario_c(self) -> dict[str, Any]:
        plan, naive_plan = self.plans["c"]["tracks"], self.plans["c"]["naive"]
        latency = scenarios.LATENCY_MS
        bound = scenarios.in_flight_bound(self.max_in_flight, latency / 1000)
        # `--repeat` drains of cs-relay, the one of the median share reported
        drains = []
        for n in range(self.args.repeat):
            label = f"c-cs-relay-{n + 1}" if n else "c-cs-relay"
            first = n == 0
            drains.append(
                await self.drain(
                    label, CS_RELAY, plan, latency_ms=latency, profile_it=self.args.profile and first, keep_jobs=first
                )
            )
        jobs = drains[0].pop("_jobs")
        shares = [
            scenarios.bound_share({p: d["requests_per_second_by_partner"][p] for p in MEASURED}, bound) for d in drains
        ]
        relay = drains[scenarios.median_index(shares)]
        naive = await self.drain("c-naive", NAIVE, naive_plan, latency_ms=latency)
        add_latency(self.mocks, latency)
        try:
            http = await self.http_ceiling(jobs)
        finally:
            reset_mocks(self.mocks)
        per_partner = {p: relay["requests_per_second_by_partner"][p] for p in MEASURED}
        share = scenarios.bound_share(per_partner, bound)
        http_share = scenarios.ratio(http["requests_per_second"] / len(MEASURED), bound)
        return {
            "plan": _plan(plan),
            "naive_plan": _plan(naive_plan),
            "profiles": _profiles({CS_RELAY: drains[0]}),
            "latency_ms": latency,
            "max_in_flight": self.max_in_flight,
            "bound_requests_per_second_per_partner": bound,
            "cs_relay": relay,
            "naive": naive,
            "plain_http": http,
            "rounds": [
                {
                    "cs_relay_tracks_per_s": round(d["events_per_second"], 1),
                    "cs_relay_cpu_ms_per_track": d["cpu_ms_per_event"],
                    "cs_relay_cpu_ms_per_track_by_thread": d["cpu_ms_per_event_by_thread"],
                    "share_of_bound": _round(share_n),
                    "machine_speed": d.get("machine_speed"),  # bench.speedprobe: 1.0 the fastest seen
                    "speed_probe_us": d.get("speed_probe_us"),
                    "complete": d["complete"],
                }
                for d, share_n in zip(drains, shares, strict=True)
            ],
            "ratios": {
                "cs_relay_share_of_bound": _round(share),
                "plain_http_share_of_bound": _round(http_share),
                "cs_relay_vs_naive": _round(scenarios.ratio(relay["events_per_second"], naive["events_per_second"])),
            },
            "headline": f"cs-relay {relay['events_per_second']:,.0f} tracks/s, "
            f"{sum(per_partner.values()) / len(per_partner):,.0f} requests/s per partner = "
            f"{scenarios.percent(share)} of the bound ({self.max_in_flight} / {latency / 1000:g} s = {bound:,.0f}/s; "
            f"{_spread(shares, '%')}; the cores' speed {_speeds(drains)}); "
            f"bare client {scenarios.percent(http_share)}; "
            f"naive {naive['events_per_second']:,.1f} tracks/s",
        }

    async def scenario_d(self) -> dict[str, Any]:
        heavy_plan, light_plan = self.plans["d"]["heavy"], self.plans["d"]["light"]
        heavy = await self.drain("d-heavy", CS_RELAY, heavy_plan, changelog_records=True)
        light = await self.drain("d-light", CS_RELAY, light_plan, changelog_records=True)
        rate = scenarios.ratio(heavy["events_per_second"], light["events_per_second"])
        for figures, plan in ((heavy, heavy_plan), (light, light_plan)):
            figures["state_bytes_per_user"] = round(scenarios.per_user(figures["state"]["data"], plan.users))
        big_topic, big = scenarios.largest(heavy["changelog_max_record_bytes"])
        return {
            "heavy_plan": _plan(heavy_plan),
            "light_plan": _plan(light_plan),
            "heavy": heavy,
            "light": light,
            "ratios": {"heavy_vs_light_rate": _round(rate)},
            # max.message.bytes that cs-relay sets on the topics it creates
            "record_bound_bytes": RECORD_LIMIT,
            "headline": f"heavy {heavy['events_per_second']:,.0f} tracks/s = {scenarios.percent(rate)} of light "
            f"({light['events_per_second']:,.0f}); state {heavy['state_bytes_per_user']:,} vs "
            f"{light['state_bytes_per_user']:,} bytes per user; largest changelog record {big:,} bytes ({big_topic}; "
            f"the topics' bound: {RECORD_LIMIT:,})",
        }

    async def scenario_e(self) -> dict[str, Any]:
        plan = self.plans["e"]["tracks"]
        one = self.b_relay
        if one is None or self.args.scale != 1.0 and one["events"] != plan.tracks:
            one = await self.drain("e-one", CS_RELAY, plan)
        two = await self.drain("e-two", CS_RELAY, plan, workers=2)
        gain = scenarios.ratio(two["events_per_second"], one["events_per_second"])
        return {
            "plan": _plan(plan),
            "one_worker": one if "e-one" in self.drains else {"same_as": "b.cs_relay"},
            "two_workers": two,
            "one_worker_events_per_second": one["events_per_second"],
            "ratios": {"two_vs_one": _round(gain)},
            "headline": f"two workers {two['events_per_second']:,.0f} tracks/s = {gain:.2f}x one "
            f"({one['events_per_second']:,.0f}); both at {two['worker_cpu_cores']:.2f} cores together",
        }

    async def scenario_f(self) -> dict[str, Any]:
        plan = self.plans["f"]["users"]
        relay = await self.drain("f-many-users", CS_RELAY, plan, trim=True)
        rss = relay["worker_rss_at_end_mb"]
        curve = relay["worker_memory_by_users"]
        growth = stats.growth_per_100k_users(curve)
        users = relay["events_delivered"] or plan.users  # a drain that gave up: the users it has state for
        per_user = scenarios.per_user(relay["state"]["data"], users)
        return {
            "plan": {"users": plan.users, "groups": plan.groups},
            "cs_relay": relay,
            "state_bytes_per_user": round(per_user),
            "rss_mb_per_100k_more_users": _round(growth),
            "headline": f"{users:,} of {plan.users:,} users delivered: worker RSS {rss:,.0f} MB at the end (peak "
            f"{relay['worker_peak_rss_mb']:,.0f} MB; +{growth:,.1f} MB per 100,000 users over the second half), "
            f"table data {relay['state']['data'] / 2**20:,.1f} MB ({per_user:,.0f} bytes per user); "
            f"{relay['events_per_second']:,.0f} users/s at {relay['worker_cpu_cores']:.2f} cores",
        }

    async def scenario_g(self) -> dict[str, Any]:
        latency = scenarios.LATENCY_MS
        out: dict[str, Any] = {"latency_ms": latency}
        points = []
        for key, plan in self.plans["g"].items():
            if isinstance(plan, BurstPlan):
                out[key] = await burst.measure(self, f"g-burst-{plan.burst}", plan, latency)
                points.append((plan.burst, out[key]["last_other_after_last_produce_s"]))
        growth = scenarios.growth_per_thousand(points)
        out["seconds_per_1000_more_burst_tracks"] = _round(growth)
        waits = ", ".join(f"{seconds:,.1f} s behind {size:,} tracks" for size, seconds in points)
        out["headline"] = (
            f"the last of {scenarios.OTHER_USERS} other users' tracks delivered {waits} of one user "
            f"(+{growth:,.1f} s per 1,000 more), {latency:g} ms at both partners"
        )
        return out


def _plan(plan: TrackPlan) -> dict[str, Any]:
    return {"users": plan.users, "tracks_per_user": plan.per_user, "tracks": plan.tracks, "groups": plan.groups}


def _round(value: float) -> float:
    return round(value, 4)


def _round_figures(drains: dict[str, dict[str, Any]], ratio: float) -> dict[str, Any]:
    """One round of scenario b: each relay's rate and CPU per track, and their ratio."""
    relay, naive = drains[CS_RELAY], drains[NAIVE]
    return {
        "cs_relay_tracks_per_s": round(relay["events_per_second"], 1),
        "naive_tracks_per_s": round(naive["events_per_second"], 1),
        "cs_relay_vs_naive": _round(ratio),
        "cs_relay_cpu_ms_per_track": relay["cpu_ms_per_event"],
        "naive_cpu_ms_per_track": naive["cpu_ms_per_event"],
        "cs_relay_cpu_ms_per_track_by_thread": relay["cpu_ms_per_event_by_thread"],
        "naive_cpu_ms_per_track_by_thread": naive["cpu_ms_per_event_by_thread"],
        "cs_relay_machine_speed": relay.get("machine_speed"),  # bench.speedprobe: 1.0 the fastest seen
        "naive_machine_speed": naive.get("machine_speed"),
        "cs_relay_speed_probe_us": relay.get("speed_probe_us"),
        "naive_speed_probe_us": naive.get("speed_probe_us"),
        "first": next(iter(drains)),  # the relay drained first in the round
        "complete": relay["complete"] and naive["complete"],
    }


def _profiles(drains: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The py-spy summaries of a scenario's profiled drains (its first round), by relay."""
    return {kind: figures["profile"] for kind, figures in drains.items() if "profile" in figures}


def _speeds(drains: list[dict[str, Any]]) -> str:
    """'1.00, 0.62, 0.81': how fast the cores ran in each drain (`stats.machine_speed`)."""
    return ", ".join(scenarios.speed(d.get("machine_speed")) for d in drains)


def _spread(values: list[float], unit: str) -> str:
    """'median of 3 rounds: 0.95x, 1.02x, 1.10x' (or '... %'), in the rounds' order."""
    shown = [scenarios.percent(v) if unit == "%" or not math.isfinite(v) else f"{v:.2f}x" for v in values]
    return f"median of {len(values)} round{'s' if len(values) != 1 else ''}: {', '.join(shown)}"
