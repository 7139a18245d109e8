"""Windowed aggregation, the pure parts (streams.core.aggregate and each destination's
rule): window assignment, sums and counts per key, the GMT-day boundary, value_property,
and the redo guard."""

from __future__ import annotations

from datetime import datetime

from streams.core.aggregate import CloseIndex, Fold, Windows, due, fold, next_close, remove, window_id, window_start
from streams.core.decision import PartnerRequest, Send
from streams.core.destination import Destination
from streams.core.mappings import DestinationControls
from streams.core.pending import Pending
from streams.core.positions import position
from streams.core.segment import parse
from streams.core.state import GroupState
from streams.core.step import step
from streams.destinations import REGISTRY
from streams.destinations.clientsuccess import mapping as cs
from streams.destinations.customersuccessbox import mapping as csb
from streams.runtime import wiring
from streams.settings import Settings

HOUR = 3600


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cs_request(event: str, value: float, org: str = "acme", user: str = "u1") -> PartnerRequest:
    body = {"identity": {"organization": {"id": org, "name": org}, "user": {"id": user}}, "value": value}
    return PartnerRequest("POST", f"/collector/1.0.0/projects/src/events/{event}", {**body, "timestamp": "x"})


def feature(feature_id: str = "Export", total: int = 1, account: str = "a1") -> PartnerRequest:
    body = {
        "type": "feature",
        "accountId": account,
        "userId": "u1",
        "productId": "p",
        "moduleId": "m",
        "featureId": feature_id,
        "total": total,
        "timestamp": "2026-11-30T10:00:00Z",
    }
    return PartnerRequest("POST", "/api_js/v1_1/feature", body)


def test_windows_are_aligned_to_gmt_midnight_and_never_cross_it():
    assert window_start(ts("2026-11-30T10:42:17Z"), HOUR) == ts("2026-11-30T10:00:00Z")
    assert window_start(ts("2026-11-30T23:59:59Z"), 4 * HOUR) == ts("2026-11-30T20:00:00Z")
    assert window_start(ts("2026-12-01T00:00:00Z"), 4 * HOUR) == ts("2026-12-01T00:00:00Z")
    assert window_start(ts("2026-11-30T10:00:03Z"), 2) == ts("2026-11-30T10:00:02Z")
    # a window holding 23:59:59 ends exactly at the next midnight, for every size the parser allows
    for size in (2, 30, 900, HOUR, 6 * HOUR, 24 * HOUR):
        start = window_start(ts("2026-11-30T23:59:59Z"), size)
        assert start + size == ts("2026-12-01T00:00:00Z")


def test_sums_and_counts_per_partner_event_and_window():
    at = ts("2026-11-30T10:15:00Z")
    folds = [Fold("clientsuccess", cs_request("Export", 2), "value")]
    w = fold(Windows(), folds, at=at, sizes={"clientsuccess": HOUR}, offset=1)
    w = fold(
        w,
        [Fold("clientsuccess", cs_request("Export", 3.5), "value")],
        at=at + 60,
        sizes={"clientsuccess": HOUR},
        offset=2,
    )
    w = fold(
        w,
        [Fold("clientsuccess", cs_request("Import", 1), "value")],
        at=at + 90,
        sizes={"clientsuccess": HOUR},
        offset=3,
    )
    w = fold(
        w,
        [Fold("clientsuccess", cs_request("Export", 1, org="other"), "value")],
        at=at + 99,
        sizes={"clientsuccess": HOUR},
        offset=4,
    )
    # the next window is another window
    w = fold(
        w,
        [Fold("clientsuccess", cs_request("Export", 7), "value")],
        at=at + HOUR,
        sizes={"clientsuccess": HOUR},
        offset=5,
    )
    by = {
        (x.request.path.rsplit("/", 1)[-1], x.request.json["identity"]["organization"]["id"], x.start): x
        for x in w.windows.values()
    }
    start = ts("2026-11-30T10:00:00Z")
    assert (by[("Export", "acme", start)].amount, by[("Export", "acme", start)].count) == (5.5, 2)
    assert (by[("Import", "acme", start)].amount, by[("Import", "acme", start)].count) == (1, 1)
    assert by[("Export", "other", start)].count == 1
    assert by[("Export", "acme", start + HOUR)].amount == 7
    assert w.offset == 5
    closed = due(w, ts("2026-11-30T11:00:00Z"))
    assert len(closed) == 3 and all(x.start == start for _, x in closed)
    assert next_close(w) == start + HOUR
    assert next_close(remove(w, [k for k, _ in closed])) == start + 2 * HOUR
    assert Windows.from_dict(w.to_dict()) == w  # the table row round-trips


def test_a_call_processed_again_is_not_counted_twice():
    sizes = {"clientsuccess": HOUR}
    at = ts("2026-11-30T10:15:00Z")
    w = fold(Windows(), [Fold("clientsuccess", cs_request("E", 1), "value")], at=at, sizes=sizes, offset=7)
    again = fold(w, [Fold("clientsuccess", cs_request("E", 1), "value")], at=at + HOUR, sizes=sizes, offset=7)
    assert again is w
    assert fold(w, [Fold("clientsuccess", cs_request("E", 1), "value")], at=at, sizes=sizes, offset=6) is w


def test_calls_routed_from_the_input_topic_and_the_by_user_topic_are_each_counted_once():
    # CS_RELAY_INPUT_KEYED_BY_USER: a user's calls come from the input topic, and a
    # merged visitor's forwarded calls (or a replay) from the by-user topic, numbered
    # apart; a redo is told apart within each topic.
    sizes = {"clientsuccess": HOUR}
    at = ts("2026-11-30T10:15:00Z")
    one = [Fold("clientsuccess", cs_request("E", 1), "value")]
    w = fold(Windows(), one, at=at, sizes=sizes, offset=position(500, from_input=True))
    w = fold(w, one, at=at, sizes=sizes, offset=position(3, from_input=False))  # a forwarded call
    w = fold(w, one, at=at, sizes=sizes, offset=position(501, from_input=True))
    assert [x.count for x in w.windows.values()] == [3]
    assert fold(w, one, at=at, sizes=sizes, offset=position(501, from_input=True)) is w  # redo
    assert fold(w, one, at=at, sizes=sizes, offset=position(3, from_input=False)) is w  # redo
    assert (w.offset, w.input_offset) == (3, position(501, from_input=True))
    assert Windows.from_dict(w.to_dict()) == w
    closed = remove(w, list(w.windows))
    assert (closed.offset, closed.input_offset, closed.windows) == (w.offset, w.input_offset, {})


def test_the_window_id_ignores_the_summed_field_and_the_timestamp_only():
    start = ts("2026-11-30T10:00:00Z")
    assert window_id("clientsuccess", cs_request("E", 1), "value", start) == window_id(
        "clientsuccess", cs_request("E", 9), "value", start
    )
    assert window_id("customersuccessbox", feature(total=1), "total", start) == window_id(
        "customersuccessbox", feature(total=4), "total", start
    )
    assert window_id("customersuccessbox", feature(), "total", start) != window_id(
        "customersuccessbox", feature(account="a2"), "total", start
    )


def test_clientsuccess_sends_the_sum_stamped_with_the_window_start():
    assert cs.aggregate_field(cs_request("E", 1)) == "value"
    out = cs.aggregated(cs_request("E", 1), 12.5, ts("2026-11-30T10:00:00Z"), ts("2026-11-30T11:00:01Z"))
    assert out.json["value"] == 12.5
    assert out.json["timestamp"] == "2026-11-30T10:00:00Z"
    assert out.path.endswith("/events/E")


def test_customersuccessbox_aggregates_feature_calls_only_with_a_timestamp_of_the_push_day():
    assert csb.aggregate_field(feature()) == "total"
    track = PartnerRequest("POST", "/api_js/v1_1/track", {"event": "E"})
    assert csb.aggregate_field(track) is None
    start = ts("2026-11-30T10:00:00Z")
    same_day = csb.aggregated(feature(), 6, start, ts("2026-11-30T11:00:02Z"))
    assert (same_day.json["total"], same_day.json["timestamp"]) == (6, "2026-11-30T10:00:00Z")
    # the last window of a day closes at midnight: pushed on the next day, stamped with it
    last = csb.aggregated(feature(), 3, ts("2026-11-30T23:00:00Z"), ts("2026-12-01T00:00:01Z"))
    assert last.json["timestamp"] == "2026-12-01T00:00:01Z"
    assert last.json["total"] == 3 and isinstance(last.json["total"], int)


def test_value_property_is_what_clientsuccess_sums(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[clientsuccess]\naggregate = "1h"\nvalue_property = "revenue"\n')
    settings = Settings.from_env(
        {
            "CLIENTSUCCESS_SOURCE_ID": "src",
            "CLIENTSUCCESS_API_KEY": "cs-key-0123456789",
            "CS_RELAY_MAPPINGS": str(path),
        }
    )
    (dest,) = wiring.destinations(settings)
    assert dest.window == HOUR
    groups: dict[str, GroupState] = {}
    msg = parse(b'{"type":"group","userId":"u1","groupId":"acme","traits":{"name":"Acme"},"messageId":"g"}')
    first = step(
        "u1", msg, "", {}, None, Pending(), groups.get, [dest], now=0, now_iso="", max_pending=10, max_pending_age=10
    )
    known = {"acme": first.group}
    track = parse(
        b'{"type":"track","userId":"u1","event":"Order","properties":{"revenue":40,"value":2},"messageId":"t"}'
    )
    result = step(
        "u1",
        track,
        "",
        {},
        first.user,
        Pending(),
        known.get,
        [dest],
        now=0,
        now_iso="",
        max_pending=10,
        max_pending_age=10,
    )
    assert result.dispatches == []
    (f,) = result.folds
    assert (f.destination, f.field, f.request.json["value"]) == ("clientsuccess", "value", 40)


def test_without_aggregate_a_destination_sends_as_before():
    plugin = next(p for p in REGISTRY if p.key == "clientsuccess")
    dest = wiring.destination(
        plugin,
        Settings.from_env(
            {"CLIENTSUCCESS_SOURCE_ID": "src", "CLIENTSUCCESS_API_KEY": "cs-key-0123456789"}
        ).destinations["clientsuccess"],
        wiring.Controls(),
    )
    assert dest.window is None and dest.fold(cs_request("E", 1)) is None
    webhook = Destination("webhook", "Webhook", lambda m, u, g: Send(cs_request("E", 1)), window=HOUR)
    assert webhook.fold(cs_request("E", 1)) is None  # no rule: nothing to sum
    assert DestinationControls().aggregate is None


def test_the_close_index_hands_out_each_due_user_once():
    index = CloseIndex()
    index.set("a", 10)
    index.set("b", 20)
    index.set("a", 15)  # moved: the old entry is stale
    assert index.pop_due(12) == []
    assert index.pop_due(15) == ["a"]
    assert index.pop_due(100) == ["b"]
    assert len(index) == 0
    index.set("c", 5)
    index.set("c", None)
    assert index.pop_due(100) == []
