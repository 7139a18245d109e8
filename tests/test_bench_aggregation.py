"""The requests-saved figures of `python -m bench --aggregate WINDOW` (bench/aggregation.py):
which recorded request a window sent, the counts and the per-1,000 figures. Pure."""

from __future__ import annotations

import math
import tomllib

import pytest

from bench import aggregation, run
from bench.mix import iso_from_us
from streams.core import mappingfile

WINDOW_S = 10
START_US = 1_796_000_000 * 1_000_000  # a whole multiple of 10 s


def cs(user: str, event: str = "12", at_us: int = START_US, status: int = 200) -> dict:
    body = {
        "identity": {"organization": {"id": "g1", "name": "G"}, "user": {"id": user}},
        "value": 3,
        "timestamp": iso_from_us(at_us),
    }
    return {"raw_path": f"/collector/1.0.0/projects/src/events/{event}", "json": body, "status": status}


def csb(endpoint: str, user: str, feature: str = "Report Exported", at_us: int = START_US) -> dict:
    body = {"accountId": "g1", "userId": user, "timestamp": iso_from_us(at_us)}
    if endpoint == "feature":
        body.update(productId="analytics", moduleId="reports", featureId=feature, total=2)
    return {"raw_path": f"/api_js/v1_1/{endpoint}", "json": body, "status": 200}


def test_the_mapping_file_sets_the_window_for_both_partners_and_passes_validation() -> None:
    text = aggregation.mapping_file("10s")
    assert tomllib.loads(text) == {"clientsuccess": {"aggregate": "10s"}, "customersuccessbox": {"aggregate": "10s"}}
    controls = mappingfile.load(text, "m.toml", {key: {} for key in aggregation.AGGREGATED})
    assert [controls.of(key).aggregate for key in aggregation.AGGREGATED] == [10, 10]


def test_a_window_key_is_given_to_window_aligned_requests_only() -> None:
    assert aggregation.window_key("clientsuccess", cs("u1"), WINDOW_S) == (
        "clientsuccess",
        "/collector/1.0.0/projects/src/events/12",
        "g1",
        "u1",
    )
    # a held call sent one by one carries its own timestamp, to the µs
    assert aggregation.window_key("clientsuccess", cs("u1", at_us=START_US + 1_234_567), WINDOW_S) is None
    assert aggregation.window_key("customersuccessbox", csb("feature", "u1"), WINDOW_S) == (
        "customersuccessbox",
        "g1",
        "u1",
        "analytics",
        "reports",
        "Report Exported",
    )
    # CustomerSuccessBox aggregates feature calls only
    assert aggregation.window_key("customersuccessbox", csb("page", "u1"), WINDOW_S) is None
    assert aggregation.window_key("customersuccessbox", {"raw_path": "/x", "json": None}, WINDOW_S) is None


def test_count_gives_the_one_window_estimate_from_distinct_keys() -> None:
    later = START_US + 2 * WINDOW_S * 1_000_000
    records = {
        "clientsuccess": [
            cs("u1"),
            cs("u1", at_us=later),  # the same key, a later window: one request with one window
            cs("u2"),
            cs("u3", at_us=START_US + 5),  # held, sent one by one
            cs("u4", status=503),
        ],
        "customersuccessbox": [csb("feature", "u1"), csb("feature", "u1", at_us=later), csb("identify", "u1")],
    }
    counted = aggregation.count(records, WINDOW_S)
    assert counted == {
        "requests": {"clientsuccess": 4, "customersuccessbox": 3},
        "requests_not_2xx": 1,
        "windowed_requests": 5,
        "window_keys": 3,
        "one_window_requests": 7 - 5 + 3,
    }


def test_figures_per_1000_events_and_the_saving() -> None:
    counted = {
        "requests": {"clientsuccess": 300, "customersuccessbox": 700},
        "requests_not_2xx": 0,
        "windowed_requests": 600,
        "window_keys": 200,
        "one_window_requests": 600,
    }
    figures = aggregation.figures(2000, {"clientsuccess": 1400, "customersuccessbox": 2000}, counted, "10s", 10)
    assert figures["per_1000_events_without"] == 1700.0
    assert figures["per_1000_events_with"] == 500.0
    assert figures["saving_percent"] == pytest.approx(70.6)
    assert figures["per_1000_events_one_window"] == 300.0
    assert figures["saving_percent_one_window"] == pytest.approx(82.4)
    assert figures["by_partner"]["clientsuccess"] == {"without": 700.0, "with": 150.0, "saving_percent": 78.6}
    lines = aggregation.report_lines({**figures, "complete": True})
    assert '1,700 partner requests per 1,000 events without, 500 with aggregate = "10s": 70.6 % saved' in lines[0]
    assert "300 per 1,000 (82.4 % saved)" in lines[1]
    assert "INCOMPLETE" in aggregation.report_lines({**figures, "complete": False})[0]


def test_nothing_to_save_is_not_a_number() -> None:
    assert math.isnan(aggregation.saving(0, 0))
    assert math.isnan(aggregation.per_1000(5, 0))


def test_the_flag_takes_a_window_that_divides_a_day_and_needs_scenario_a() -> None:
    args = run.parse_args(["--scenarios", "a", "--aggregate", "10s"])
    assert (args.aggregate, args.aggregate_s) == ("10s", 10)
    assert run.parse_args(["--scenarios", "a"]).aggregate_s is None
    for argv in (["--aggregate", "7s"], ["--scenarios", "b", "--aggregate", "10s"], ["--aggregate", "1h"]):
        with pytest.raises(SystemExit):
            run.parse_args(argv)
