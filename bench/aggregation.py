"""Requests saved by windowed aggregation (`--aggregate WINDOW`, scenario a).

Scenario a's backlog is sent a second time, to a fresh app id, by a worker whose mapping
file sets `aggregate = WINDOW` for ClientSuccess and CustomerSuccessBox
(docs/mappings.md, "aggregate"). Its requests come only when windows close, so the bench
waits until every window has closed and counts what the mocks received: an exact count
for that window length. The pure part is here: the mapping file, which request belongs
to a window, and the figures (requests per 1,000 events with and without, the saving).

A longer window (1 h) can only send fewer: at most one request per window key, plus the
requests not aggregated. `one_window_requests` is what the run would have sent had its
whole drain fallen in one window: the requests not sent by a window plus the distinct
keys of the windowed ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench import stats
from bench.mix import us_from_iso

CLIENTSUCCESS, CSB = "clientsuccess", "customersuccessbox"
AGGREGATED = (CLIENTSUCCESS, CSB)
FEATURE_PATH = "/feature"  # CustomerSuccessBox's feature-usage endpoint, the one it aggregates


def mapping_file(window: str) -> str:
    """The TOML mapping file of the aggregated pass."""
    return "".join(f'[{key}]\naggregate = "{window}"\n\n' for key in AGGREGATED)


def window_key(partner: str, record: Mapping[str, Any], window_s: int) -> tuple[Any, ...] | None:
    """The (destination, account, user, event) key of a request a window sent, or None
    for a request sent one by one. A window's request is stamped with the window's start
    (a whole multiple of the window); a call sent one by one (a held ClientSuccess call,
    any call CustomerSuccessBox does not aggregate) carries its own timestamp, to the µs."""
    body = record.get("json")
    stamp = body.get("timestamp") if isinstance(body, dict) else None
    if not isinstance(stamp, str) or us_from_iso(stamp) % (window_s * stats.US):
        return None
    path = str(record.get("raw_path", ""))
    if partner == CLIENTSUCCESS:
        identity = body.get("identity") or {}
        return (partner, path, (identity.get("organization") or {}).get("id"), (identity.get("user") or {}).get("id"))
    if partner == CSB and path.endswith(FEATURE_PATH):
        fields = ("accountId", "userId", "productId", "moduleId", "featureId")
        return (partner, *(body.get(f) for f in fields))
    return None


def count(records: Mapping[str, Sequence[Mapping[str, Any]]], window_s: int) -> dict[str, Any]:
    """What the partners received in the aggregated pass: 2xx requests per partner, the
    windowed ones among them, and the one-window estimate."""
    requests: dict[str, int] = {}
    windowed = 0
    keys: set[tuple[Any, ...]] = set()
    not_2xx = 0
    for partner, mine in records.items():
        requests[partner] = 0
        for record in mine:
            if not 200 <= int(record["status"]) < 300:
                not_2xx += 1
                continue
            requests[partner] += 1
            key = window_key(partner, record, window_s)
            if key is not None:
                windowed += 1
                keys.add(key)
    total = sum(requests.values())
    return {
        "requests": requests,
        "requests_not_2xx": not_2xx,
        "windowed_requests": windowed,
        "window_keys": len(keys),
        "one_window_requests": total - windowed + len(keys),
    }


def per_1000(requests: int, events: int) -> float:
    return round(1000 * requests / events, 1) if events else float("nan")


def saving(without: float, with_: float) -> float:
    """The share of requests saved, in % (NaN without requests to save)."""
    return round(100 * (1 - with_ / without), 1) if without else float("nan")


def figures(
    events: int, without: Mapping[str, int], counted: Mapping[str, Any], window: str, window_s: int
) -> dict[str, Any]:
    """The results' `aggregation` section: scenario a's backlog requests without
    aggregation (`without`, per partner) against the aggregated pass's (`counted`)."""
    before = sum(without.values())
    after = sum(counted["requests"].values())
    by_partner = {
        p: {
            "without": per_1000(without.get(p, 0), events),
            "with": per_1000(counted["requests"].get(p, 0), events),
            "saving_percent": saving(without.get(p, 0), counted["requests"].get(p, 0)),
        }
        for p in sorted({*without, *counted["requests"]})
    }
    return {
        "window": window,
        "window_s": window_s,
        "events": events,
        "requests_without": dict(without),
        **counted,
        "per_1000_events_without": per_1000(before, events),
        "per_1000_events_with": per_1000(after, events),
        "saving_percent": saving(before, after),
        "per_1000_events_one_window": per_1000(counted["one_window_requests"], events),
        "saving_percent_one_window": saving(before, counted["one_window_requests"]),
        "by_partner": by_partner,
    }


def report_lines(agg: Mapping[str, Any]) -> list[str]:
    """The printed summary's lines."""
    complete = "" if agg.get("complete", True) else " (INCOMPLETE: gave up waiting)"
    return [
        f"  aggregation    {agg['per_1000_events_without']:,.0f} partner requests per 1,000 events without, "
        f'{agg["per_1000_events_with"]:,.0f} with aggregate = "{agg["window"]}": '
        f"{agg['saving_percent']:.1f} % saved ({agg['events']:,} events){complete}",
        f"                 the whole drain in one window (as with 1 h, unless it crosses the hour): "
        f"{agg['per_1000_events_one_window']:,.0f} per 1,000 ({agg['saving_percent_one_window']:.1f} % saved)",
    ]
