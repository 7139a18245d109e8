"""The benchmark's scenario plans and ratios (bench/scenarios.py), scenario g's figures
(bench/burst.py), its profile tables (bench/profile.py) and its scenarios chart's data
(bench/charts.py). Pure, no broker, nothing timed."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest

from bench import burst, charts, mix, profile, scenarios
from bench.stats import Receipt


def test_parse_choice_keeps_the_canonical_order_and_refuses_unknown_names():
    assert scenarios.parse_choice("c, a,b") == ("a", "b", "c")
    assert scenarios.parse_choice("F") == ("f",)
    for bad in ("", "a,z", ","):
        with pytest.raises(ValueError):
            scenarios.parse_choice(bad)


def test_default_scenarios_leave_out_the_million_users():
    assert scenarios.DEFAULT == ("a", "b", "c", "d", "e", "g")
    assert set(scenarios.TARGETS) == set(scenarios.TITLES) == set(scenarios.ALL)


def test_plans_at_scale_one_are_the_sizes_of_issue_13():
    plans = scenarios.plans()
    b = plans["b"]["tracks"]
    assert (b.users, b.tracks) == (2_000, 20_000)
    heavy, light = plans["d"]["heavy"], plans["d"]["light"]
    assert (heavy.users, heavy.per_user, light.users, light.per_user) == (20, 1_000, 10_000, 2)
    assert heavy.tracks == light.tracks  # the same work, spread differently
    assert plans["f"]["users"].users == 1_000_000
    assert plans["e"]["tracks"].tracks == b.tracks
    g = list(plans["g"].values())
    assert [(p.burst, p.others) for p in g] == [(6_000, 200), (12_000, 200)]  # issue 23's sizes


def test_plans_scale_and_use_disjoint_users():
    plans = scenarios.plans(0.1)
    assert plans["b"]["tracks"].tracks == 2_000
    assert plans["d"]["heavy"].users == 20 and plans["d"]["heavy"].per_user == 100
    assert plans["d"]["light"].users == 1_000
    assert [p.burst for p in plans["g"].values()] == [600, 1_200]  # the others stay 200
    ranges = [
        range(p.first_user, p.first_user + p.users)
        for name in "bcdeg"
        for p in plans[name].values()
        if isinstance(p, (scenarios.TrackPlan, scenarios.BurstPlan))
    ]
    assert len(ranges) == 8
    for i, one in enumerate(ranges):
        for other in ranges[i + 1 :]:
            assert not set(one) & set(other)
    with pytest.raises(ValueError):
        scenarios.plans(0)


def test_track_plan_warms_up_every_user_then_tracks_them_evenly_without_context_group():
    plan = scenarios.TrackPlan(users=50, per_user=4, groups=10, first_user=1_000)
    warm, backlog = plan.warm_up(), plan.backlog()
    assert [c.type for c in warm] == ["group"] * 50
    assert sorted(c.user for c in warm) == list(range(1_000, 1_050))
    assert all(c.group == c.user % 10 for c in warm + backlog)
    assert Counter(c.user for c in backlog) == {u: 4 for u in range(1_000, 1_050)}
    assert all(c.type == "track" for c in backlog)
    assert [c.user for c in backlog] != sorted(c.user for c in backlog)  # shuffled
    body = mix.message(backlog[0], seq=0, run="t", produced_us=1_000_000)
    assert "groupId" not in body["context"]  # attributable only through the user's group call
    assert plan.backlog() == backlog  # reproducible


def test_burst_plan_sends_one_users_tracks_then_one_track_of_each_other_user():
    plan = scenarios.BurstPlan(burst=30, others=5, groups=3, first_user=500)
    warm, backlog = plan.warm_up(), plan.backlog()
    assert [(c.type, c.user) for c in warm] == [("group", u) for u in range(500, 506)]
    assert [c.user for c in backlog] == [500] * 30 + [501, 502, 503, 504, 505]
    assert all(c.type == "track" and c.group == c.user % 3 for c in backlog)
    assert (plan.users, plan.tracks) == (6, 35)
    body = mix.message(backlog[-1], seq=0, run="t", produced_us=1_000_000)
    assert "groupId" not in body["context"]  # attributable only through the user's group call
    assert plan.backlog() == backlog


def test_growth_per_thousand_burst_tracks():
    assert scenarios.growth_per_thousand([(12_000, 356.0), (6_000, 56.0)]) == pytest.approx(50.0)
    assert math.isnan(scenarios.growth_per_thousand([(6_000, 56.0)]))
    assert math.isnan(scenarios.growth_per_thousand([(300, 1.0), (300, 2.0)]))


def _receipts(partners: tuple[str, ...], event_us: int, received_us: int, status: int = 200) -> list[Receipt]:
    return [Receipt(p, event_us, received_us, status) for p in partners]


def test_burst_figures_time_the_last_other_track_from_the_last_produce():
    both = ("clientsuccess", "customersuccessbox")
    s = 1_000_000
    produced = [10 * s, 10 * s + 1, 10 * s + 2, 11 * s, 12 * s]  # three burst tracks, then two others
    receipts = [
        *_receipts(both, 10 * s, 13 * s),
        *_receipts(both, 10 * s + 1, 15 * s),  # after the last other: not "by then"
        *_receipts(both[:1], 10 * s + 2, 13 * s),  # one partner only: not delivered
        *_receipts(both, 11 * s, 12 * s),
        *_receipts(both, 12 * s, 14 * s + 500_000),
        *_receipts(both, 12 * s, 20 * s, status=500),  # a failed request does not count
    ]
    figures = burst.burst_figures(receipts, produced, burst=3, complete=True)
    assert figures["complete"] and figures["others_delivered"] == 2
    assert figures["last_other_after_last_produce_s"] == pytest.approx(2.5)
    assert figures["produce_s"] == pytest.approx(2.0)
    assert figures["burst_delivered_by_then"] == 1
    assert figures["other_track_produce_to_delivery_s"]["max"] == 2.5


def test_burst_figures_are_incomplete_while_an_other_track_is_missing():
    both = ("clientsuccess", "customersuccessbox")
    receipts = [*_receipts(both, 1, 5), *_receipts(both[1:], 3, 9)]  # the second other reached one partner
    figures = burst.burst_figures(receipts, [1, 2, 3], burst=1, complete=True)
    assert not figures["complete"] and figures["others_delivered"] == 0
    assert math.isnan(figures["last_other_after_last_produce_s"])


def test_many_users_plan_introduces_the_groups_and_names_them_in_each_track():
    plan = scenarios.ManyUsersPlan(users=2_000, groups=20)
    assert [c.user for c in plan.warm_up()] == list(range(20))
    backlog = plan.backlog()
    assert len({c.user for c in backlog}) == 2_000
    assert mix.message(backlog[5], seq=0, run="t", produced_us=1)["context"]["groupId"] == mix.group_id(5 % 20)


def test_in_flight_bound_and_the_share_reached():
    bound = scenarios.in_flight_bound(64, 0.05)
    assert bound == pytest.approx(1_280)
    assert scenarios.bound_share({"cs": 640.0, "csb": 384.0}, bound) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        scenarios.in_flight_bound(64, 0)


def test_ratios_and_sizes():
    assert scenarios.ratio(575, 878) == pytest.approx(0.6549, abs=1e-4)
    assert math.isnan(scenarios.ratio(1, 0))
    assert scenarios.per_user(2_000_000, 2_000) == 1_000
    assert scenarios.largest({"a-seen-changelog": 640_000, "a-users-changelog": 300}) == ("a-seen-changelog", 640_000)
    assert scenarios.largest({}) == ("", 0)
    assert scenarios.percent(0.183) == "18.3%" and scenarios.percent(math.nan) == "n/a"


def test_summary_lines_quote_the_target_of_each_scenario_run():
    lines = scenarios.summary_lines({"c": {"headline": "40 % of the bound"}, "a": {"headline": "18 %"}})
    assert lines[0].startswith("  (a)") and "18 %" in lines[0]
    assert "100 ms" in lines[1] and "(c)" in lines[2] and "80 %" in lines[3]


def test_scenario_bars_take_the_ratios_present_with_their_targets():
    bars = charts.scenario_bars(
        {"b": {"ratios": {"cs_relay_vs_plain_http": 0.2, "cs_relay_vs_naive": math.nan}}, "e": {"ratios": {}}}
    )
    assert bars == [("(b) tracks: cs-relay / bare client", 0.2, None)]
    ratios = {"b": {"ratios": {"cs_relay_vs_naive": 0.95}}, "c": {"ratios": {"cs_relay_share_of_bound": 0.7}}}
    assert charts.scenario_bars(ratios) == [
        ("(b) tracks: cs-relay / naive", 0.95, 1.0),
        ("(c) 50 ms: cs-relay / in-flight bound", 0.7, 0.80),
    ]
    assert charts.scenario_bars(ratios, by_user_hop=True)[0][2] == 0.9


def test_the_charts_targets_are_the_printed_targets():
    """Each target line of the scenarios chart is a figure of its scenario's TARGETS text."""
    for name, _, _, target in charts.BARS:
        if target is not None:
            text = scenarios.TARGETS[name]
            assert f"{target:.1f}x" in text or f"{target:.0%}".replace("%", " %") in text, (name, target)
    assert f"{charts.HOP_TARGET:.1f}x with --by-user-hop" in scenarios.TARGETS["b"]


_MAIN = "<module> (streams/cli/__main__.py:3);run (asyncio/runners.py:118)"
_ROUTE = "route (/work/main/streams/runtime/intake.py:{})"
FOLDED = "\n".join(
    [
        f"{_MAIN};{_ROUTE.format(40)};loads (json/__init__.py:346) 30",
        f"{_MAIN};{_ROUTE.format(41)};step (/work/main/streams/core/step.py:99) 50",
        f"{_MAIN};_run_once (asyncio/base_events.py:1900) 20",
        "garbage line",
    ]
)


def test_profile_tables_count_self_and_cumulative_samples():
    stacks = profile.read_folded(FOLDED)
    assert len(stacks) == 3
    result = profile.top(stacks, 3)
    assert result["samples"] == 100
    assert result["self"][0] == ["step (streams/core/step.py)", 50, 0.5]
    cumulative = dict((name, count) for name, count, _ in result["cumulative"])
    assert cumulative["route (streams/runtime/intake.py)"] == 80  # two lines of one function, merged
    assert "<module> (streams/cli/__main__.py)" not in cumulative  # plumbing every sample passes through
    assert "run (asyncio/runners.py)" in cumulative
    assert result["callers"]["step (streams/core/step.py)"] == [["route (streams/runtime/intake.py)", 50, 0.5]]
    areas = profile.by_area(stacks, profile.AREAS)
    assert areas == {"cs-relay": 0.5, "json": 0.3, "asyncio": 0.2}


def test_frame_names_lose_line_numbers_and_site_packages_prefixes():
    name = profile.frame_name("send (/work/main/.venv/lib/python3.11/site-packages/aiokafka/producer.py:312)")
    assert name == "send (aiokafka/producer.py)"
    assert profile.frame_name("<module> (<string>:1)") == "<module> (<string>)"


def test_median_index_finds_the_middle_round_and_counts_nan_lowest():
    assert scenarios.median_index([1.10, 0.90, 1.00]) == 2
    assert scenarios.median_index([0.8]) == 0
    assert scenarios.median_index([1.2, 0.7, 0.9, 1.0]) == 2  # of an even count, the lower middle one
    assert scenarios.median_index([math.nan, 1.0, 0.5]) == 2
    with pytest.raises(ValueError):
        scenarios.median_index([])


def test_the_docs_scenario_table_quotes_each_target():
    """docs/benchmarks.md's table of scenarios ends each row with the target the bench prints."""
    text = (Path(__file__).parent.parent / "docs" / "benchmarks.md").read_text()
    rows: dict[str, str] = {}
    for line in text.splitlines():  # the first table's rows: "| **a** | ..."
        if line.startswith("| **") and line[5:10] == "** | ":
            rows.setdefault(line[4], line)
    for name in scenarios.ALL:
        assert rows[name].endswith(f"| {scenarios.TARGETS[name]} |"), name


def test_the_docs_flag_table_names_every_option_of_the_bench():
    """docs/benchmarks.md's table of flags lists exactly `python -m bench`'s options,
    with their defaults where the table gives a number."""
    from bench import run

    text = (Path(__file__).parent.parent / "docs" / "benchmarks.md").read_text()
    table = text[text.index("| flag | default | meaning |") :].split("\n\n")[0]
    documented = {flag for row in table.splitlines()[2:] for flag in re.findall(r"`(--[a-z-]+)`", row.split(" | ")[0])}
    parser_flags = {
        option
        for action in run.build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert documented == parser_flags
    defaults = run.parse_args([])
    for row in table.splitlines()[2:]:
        flag, default = row.split(" | ")[0].strip("| `"), row.split(" | ")[1].replace(",", "")
        if re.fullmatch(r"[0-9.]+", default):  # a number in the table: the parser's default
            assert float(default) == getattr(defaults, flag[2:].replace("-", "_")), flag
