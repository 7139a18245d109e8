"""End to end through the real broker, a worker process and both mock partners over
HTTP: what each partner ends up knowing, for the scenarios users rely on."""

from __future__ import annotations

import json
from datetime import UTC

import pytest

from streams.runtime.topiclist import changelog_name
from tests.pipeline import Pipeline, paths

pytestmark = pytest.mark.e2e

CS_EVENTS = "/collector/1.0.0/projects/demo-source/events/"
CSB = "/api_js/v1_1/"


def seg(type_: str, user: str | None, n: int, **fields):
    """A Segment message with a stable messageId and timestamp."""
    message = {"type": type_, "messageId": f"{type_}-{user}-{n}", "timestamp": f"2026-11-20T10:{n:02d}:00Z"}
    if user is not None:
        message["userId"] = user
    message.update(fields)
    return message


def cs_events(state, org):
    return [(e["event"], e["user_id"]) for e in state["organizations"].get(org, {}).get("events", [])]


async def test_a_track_reaches_both_partners(pipeline: Pipeline):
    """The thin path: group, then a track, arrive at both partners with the bodies the
    contracts ask for."""
    pipeline.start_worker()
    await pipeline.send(
        seg("group", "u1", 1, groupId="acme", traits={"name": "Acme", "plan": "pro"}),
        seg("track", "u1", 2, event="Report Built", properties={"value": 3}),
    )
    cs = await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) >= 1, what="a ClientSuccess event")
    assert cs[0]["path"] == CS_EVENTS + "Report Built"
    assert cs[0]["query"] == {"api_key": "***"}  # the mock redacts what it records
    assert cs[0]["status"] == 200
    assert cs[0]["json"] == {
        "identity": {"organization": {"id": "acme", "name": "Acme"}, "user": {"id": "u1"}},
        "value": 3,
        "timestamp": "2026-11-20T10:02:00Z",
    }
    csb = await pipeline.eventually(pipeline.csb_requests, lambda r: len(r) >= 2, what="CSB account and track")
    assert paths(csb) == [CSB + "account", CSB + "track"]
    assert [r["status"] for r in csb] == [200, 200]
    assert csb[1]["json"]["accountId"] == "acme" and csb[1]["json"]["userId"] == "u1"
    assert csb[1]["json"]["event"] == "Report Built"


async def test_events_before_the_group_arrive_after_it_in_order(pipeline: Pipeline):
    pipeline.start_worker()
    early = [seg("track", "u2", n, event=f"Early {n}") for n in range(1, 6)]
    early.append(seg("page", "u2", 6, name="Pricing"))
    await pipeline.send(*early)
    await pipeline.send(seg("identify", "u2", 7, traits={"firstName": "Ada", "lastName": "L", "email": "ada@x.io"}))
    await pipeline.send(seg("group", "u2", 8, groupId="initech", traits={"name": "Initech", "account_id": "A-9"}))
    await pipeline.send(seg("track", "u2", 9, event="Late"))

    expected = [f"Early {n}" for n in range(1, 6)] + ["Viewed Pricing Page", "Late"]
    state = await pipeline.eventually(
        pipeline.cs_state, lambda s: len(cs_events(s, "initech")) == 7, what="seven ClientSuccess events"
    )
    assert [e for e, _ in cs_events(state, "initech")] == expected
    org = state["organizations"]["initech"]
    assert org["name"] == "Initech"
    assert org["users"]["u2"] == {"name": "Ada L", "email": "ada@x.io"}

    csb = await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) == 6, what="CSB events")
    assert [(e["event"], e["accountId"]) for e in csb["events"]] == [(f"Early {n}", "A-9") for n in range(1, 6)] + [
        ("Late", "A-9")
    ]
    assert [(p["name"], p["accountId"]) for p in csb["pages"]] == [("Pricing", "A-9")]


async def test_identify_names_the_user_on_later_clientsuccess_events(pipeline: Pipeline):
    pipeline.start_worker()
    await pipeline.send(
        seg("group", "u3", 1, groupId="globex", traits={"name": "Globex"}),
        seg("track", "u3", 2, event="Before Identify"),
        seg("identify", "u3", 3, traits={"first_name": "Grace", "last_name": "Hopper", "email": "g@globex.io"}),
        seg("track", "u3", 4, event="After Identify"),
    )
    requests = await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) == 2, what="two CS events")
    users = [r["json"]["identity"]["user"] for r in requests]
    assert users == [{"id": "u3"}, {"id": "u3", "name": "Grace Hopper", "email": "g@globex.io"}]


async def test_account_ids_flow_from_group_and_identify_into_later_calls(pipeline: Pipeline):
    pipeline.start_worker()
    await pipeline.send(
        # u4's account comes from the group's traits.account_id
        seg("group", "u4", 1, groupId="g-hooli", traits={"name": "Hooli", "account_id": "acc-hooli"}),
        seg("track", "u4", 2, event="Deployed"),
        # u5 has no group call: the account id comes from identify traits, the CSB user id too
        seg("identify", "u5", 3, traits={"account_id": "acc-pied", "user_id": "richard@pied.io"}),
        seg("page", "u5", 4, name="Compression"),
        # a call naming a group in its context is attributed to that group's account
        seg("track", "u5", 5, event="Visited Hooli", context={"groupId": "g-hooli"}),
    )
    state = await pipeline.eventually(
        pipeline.csb_state, lambda s: len(s["events"]) == 2 and len(s["pages"]) == 1, what="CSB events and page"
    )
    assert sorted((e["event"], e["accountId"], e["userId"]) for e in state["events"]) == [
        ("Deployed", "acc-hooli", "u4"),
        ("Visited Hooli", "acc-hooli", "richard@pied.io"),
    ]
    assert [(p["name"], p["accountId"], p["userId"]) for p in state["pages"]] == [
        ("Compression", "acc-pied", "richard@pied.io")
    ]
    assert "richard@pied.io" in state["users"]["acc-pied"]


async def test_engage_audience_reaches_customersuccessbox_as_a_boolean_trait(pipeline: Pipeline):
    pipeline.start_worker()
    await pipeline.send(
        seg("group", "u6", 1, groupId="acme", traits={"name": "Acme"}),
        seg(
            "identify",
            "u6",
            2,
            traits={"power_users": True},
            context={"personas": {"computation_class": "audience", "computation_key": "power_users"}},
        ),
    )
    state = await pipeline.eventually(
        pipeline.csb_state,
        lambda s: s["users"].get("acme", {}).get("u6", {}).get("traits", {}).get("power_users") is not None,
        what="the audience trait at CSB",
    )
    assert state["users"]["acme"]["u6"]["traits"]["power_users"] is True


async def test_anonymous_page_views_are_attributed_after_login(pipeline: Pipeline):
    pipeline.start_worker()
    # The visitor browses before logging in; anonymousId keys them to another partition.
    await pipeline.send(
        {
            "type": "page",
            "anonymousId": "anon-7",
            "name": "Pricing",
            "messageId": "p1",
            "timestamp": "2026-11-20T09:00:00Z",
        },
        {
            "type": "page",
            "anonymousId": "anon-7",
            "name": "Signup",
            "messageId": "p2",
            "timestamp": "2026-11-20T09:01:00Z",
        },
    )
    await pipeline.send(
        seg("identify", "u7", 3, anonymousId="anon-7", traits={"firstName": "Lin", "lastName": "Wu"}),
        seg("group", "u7", 4, groupId="umbrella", traits={"name": "Umbrella", "account_id": "acc-u"}),
    )
    state = await pipeline.eventually(
        pipeline.cs_state, lambda s: len(cs_events(s, "umbrella")) == 2, what="the anonymous pages at ClientSuccess"
    )
    assert cs_events(state, "umbrella") == [("Viewed Pricing Page", "u7"), ("Viewed Signup Page", "u7")]
    csb = await pipeline.eventually(pipeline.csb_state, lambda s: len(s["pages"]) == 2, what="pages at CSB")
    assert [(p["name"], p["userId"], p["accountId"]) for p in csb["pages"]] == [
        ("Pricing", "u7", "acc-u"),
        ("Signup", "u7", "acc-u"),
    ]


async def test_state_survives_a_worker_restart(pipeline: Pipeline):
    worker = pipeline.start_worker()
    await pipeline.send(
        seg("identify", "u8", 1, traits={"firstName": "Kay", "lastName": "Oh", "email": "kay@x.io"}),
        seg("group", "u8", 2, groupId="soylent", traits={"name": "Soylent", "account_id": "acc-s"}),
        seg("track", "u8", 3, event="First"),
    )
    await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) == 1, what="the first event")
    assert worker.terminate() == 0, worker.log_tail()

    # A new process with the same data dir: RocksDB plus changelog recovery. A copy of
    # the first track (its messageId remembered in a packed dedupe row) is dropped.
    pipeline.start_worker()
    await pipeline.send(
        seg("track", "u8", 3, event="First"),
        seg("track", "u8", 4, event="After Restart"),
        seg("page", "u8", 5, name="Home"),
    )
    requests = await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) == 3, what="events after restart")
    after = requests[1:]
    assert [r["path"].rsplit("/", 1)[1] for r in after] == ["After Restart", "Viewed Home Page"]
    for r in after:
        assert r["json"]["identity"] == {
            "organization": {"id": "soylent", "name": "Soylent"},
            "user": {"id": "u8", "name": "Kay Oh", "email": "kay@x.io"},
        }
    csb = await pipeline.eventually(pipeline.csb_state, lambda s: len(s["events"]) == 2, what="CSB events")
    assert [e["accountId"] for e in csb["events"]] == ["acc-s", "acc-s"]


async def test_state_is_recovered_from_the_changelog_alone(pipeline: Pipeline):
    """A worker on a new machine (an empty data dir) rebuilds state from the changelog:
    the dedupe entries too, from their packed rows, so a copy of an event it delivered
    before is dropped."""
    worker = pipeline.start_worker(index=0)
    await pipeline.send(
        seg("group", "u9", 1, groupId="wonka", traits={"name": "Wonka", "account_id": "acc-w"}),
        seg("track", "u9", 2, event="Before"),
    )
    await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) == 1, what="the first event")
    assert worker.terminate() == 0, worker.log_tail()
    pipeline.start_worker(index=1)  # another data dir
    await pipeline.send(seg("track", "u9", 2, event="Before"), seg("track", "u9", 3, event="After"))
    requests = await pipeline.eventually(
        pipeline.cs_requests, lambda r: any(x["path"].endswith("After") for x in r), what="the later event"
    )
    assert [r["path"].rsplit("/", 1)[1] for r in requests] == ["Before", "After"]
    assert requests[1]["json"]["identity"]["organization"] == {"id": "wonka", "name": "Wonka"}

    # The messageIds reached the changelog in packed rows, never a record per id (the
    # last one's row may land just after its delivery: the event's acknowledgement waits
    # for both, not one for the other).
    async def seen_rows() -> list:
        return [json.loads(value) for value, _ in await pipeline.records(changelog_name(pipeline.name, "seen"))]

    def ids(rows: list) -> set[str]:
        return {e[2] for row in rows if isinstance(row, dict) for e in row.get("e", ())}

    wanted = {"group-u9-1", "track-u9-2", "track-u9-3"}
    seen = await pipeline.eventually(seen_rows, lambda rows: ids(rows) >= wanted, what="the packed dedupe rows")
    assert all(isinstance(row, dict) and "e" in row for row in seen), seen


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_worker_goes_on(pipeline: Pipeline):
    worker = pipeline.start_worker()
    bad = [b"\xff\xfe not utf-8", b'{"type": "track", "userId": ', b"[1, 2]", b'{"type": "teleport", "userId": "x"}']
    await pipeline.send(seg("group", "u10", 1, groupId="acme", traits={"name": "Acme"}), *bad)
    await pipeline.send(seg("track", "u10", 2, event="Still Flowing"))
    await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) == 1, what="the valid event")
    letters = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 4, what="four dead letters")
    by_value = {value: headers for value, headers in letters}
    assert set(by_value) == set(bad)  # the original bytes, untouched
    assert [by_value[b]["cs-relay-reason"] for b in bad] == [
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "unknown_type",
    ]
    for headers in by_value.values():
        assert headers["cs-relay-stage"] == "intake"
        assert headers["cs-relay-source-topic"] == pipeline.input_topic
        assert int(headers["cs-relay-source-offset"]) >= 0
    assert worker.alive


async def test_group_without_a_name_is_dead_lettered_for_clientsuccess(pipeline: Pipeline):
    pipeline.start_worker()
    nameless = seg("group", "u11", 1, groupId="nameless", traits={"plan": "free"})
    await pipeline.send(nameless)
    letters = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 1, what="the dead letter")
    value, headers = letters[0]
    assert headers["cs-relay-reason"] == "group_without_name"
    assert headers["cs-relay-destination"] == "clientsuccess"
    assert value == pipeline_bytes(nameless)
    # CustomerSuccessBox still gets the account.
    await pipeline.eventually(pipeline.csb_requests, lambda r: paths(r) == [CSB + "account"], what="the CSB account")


async def test_pending_bounds_dead_letter_what_exceeds_them(pipeline: Pipeline):
    pipeline.start_worker(CS_RELAY_PENDING_MAX_EVENTS="3")
    early = [seg("track", "u12", n, event=f"E{n}") for n in range(1, 6)]
    await pipeline.send(*early)
    letters = await pipeline.eventually(
        pipeline.dead_letters, lambda d: len(d) == 4, what="two overflowed events per destination"
    )
    reasons = sorted((h["cs-relay-reason"], h["cs-relay-destination"], json_event(v)) for v, h in letters)
    assert reasons == [
        ("pending_overflow", "clientsuccess", "E1"),
        ("pending_overflow", "clientsuccess", "E2"),
        ("pending_overflow", "customersuccessbox", "E1"),
        ("pending_overflow", "customersuccessbox", "E2"),
    ]
    await pipeline.send(seg("group", "u12", 6, groupId="acme", traits={"name": "Acme"}))
    state = await pipeline.eventually(pipeline.cs_state, lambda s: len(cs_events(s, "acme")) == 3, what="the rest")
    assert [e for e, _ in cs_events(state, "acme")] == ["E3", "E4", "E5"]


def pipeline_bytes(message) -> bytes:
    return json.dumps(message).encode()


def json_event(value: bytes) -> str:
    return json.loads(value)["event"]


async def test_a_duplicate_message_id_is_delivered_once(pipeline: Pipeline):
    pipeline.start_worker()
    group = seg("group", "u13", 1, groupId="acme", traits={"name": "Acme"})
    twice = seg("track", "u13", 2, event="Once")
    await pipeline.send(group, twice, twice, group)
    await pipeline.send(seg("track", "u13", 3, event="Marker"))
    requests = await pipeline.eventually(
        pipeline.cs_requests, lambda r: any(x["path"].endswith("Marker") for x in r), what="the marker event"
    )
    assert [r["path"].rsplit("/", 1)[1] for r in requests] == ["Once", "Marker"]
    csb = await pipeline.eventually(pipeline.csb_requests, lambda r: len(r) >= 3, what="CSB requests")
    assert paths(csb) == [CSB + "account", CSB + "track", CSB + "track"]


async def test_an_anonymous_message_sent_again_after_login_is_delivered_once(pipeline: Pipeline):
    """Segment retries byte-identical copies. A copy of an anonymous page that arrives
    after the visitor logged in is forwarded to the user; it is still the same
    messageId, and the first copy was already delivered as the user's."""
    pipeline.start_worker()
    pricing = {
        "type": "page",
        "anonymousId": "anon-9",
        "name": "Pricing",
        "messageId": "p9",
        "timestamp": "2026-11-20T09:00:00Z",
    }
    await pipeline.send(pricing)
    await pipeline.send(
        seg("identify", "u9", 3, anonymousId="anon-9", traits={"firstName": "Ada"}),
        seg("group", "u9", 4, groupId="initech", traits={"name": "Initech", "account_id": "acc-i"}),
    )
    await pipeline.eventually(pipeline.csb_state, lambda s: len(s["pages"]) == 1, what="the first copy at CSB")
    await pipeline.send(pricing, {**pricing, "name": "Marker", "messageId": "p10"})
    csb = await pipeline.eventually(
        pipeline.csb_state, lambda s: any(p["name"] == "Marker" for p in s["pages"]), what="the marker page"
    )
    assert [(p["name"], p["userId"]) for p in csb["pages"]] == [("Pricing", "u9"), ("Marker", "u9")]
    state = await pipeline.eventually(
        pipeline.cs_state, lambda s: ("Viewed Marker Page", "u9") in cs_events(s, "initech"), what="the marker at CS"
    )
    assert cs_events(state, "initech") == [("Viewed Pricing Page", "u9"), ("Viewed Marker Page", "u9")]


async def test_held_events_of_a_user_who_goes_quiet_expire_into_the_dead_letter_topic(pipeline: Pipeline):
    pipeline.start_worker(CS_RELAY_PENDING_MAX_AGE_SECONDS="1", CS_RELAY_SWEEP_INTERVAL_SECONDS="1")
    await pipeline.send(seg("track", "u14", 1, event="Never Attributed"))  # no group, no account: held
    letters = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 2, what="both expiries")
    assert sorted((h["cs-relay-reason"], h["cs-relay-destination"]) for _, h in letters) == [
        ("pending_expired", "clientsuccess"),
        ("pending_expired", "customersuccessbox"),
    ]
    assert all(json.loads(v)["event"] == "Never Attributed" for v, _ in letters)


async def test_csb_feature_usage_reaches_the_mock_as_todays_usage(pipeline: Pipeline):
    """A track with product_id and module_id is a CustomerSuccessBox feature call, which
    the mock only counts when its timestamp's GMT date is the day it arrives: today's event
    keeps its own time, a backdated one (the fixed dates of the tests and the sample) goes
    with the time of sending. Identify is a "user" call; ClientSuccess gets the email
    lower-cased and every time in UTC with Z (issue 15, items 1 and 4)."""
    from datetime import datetime, timedelta

    started = datetime.now(UTC)
    own = (started - timedelta(seconds=1)).isoformat(timespec="milliseconds")  # "+00:00"
    usage = {"product_id": "analytics", "module_id": "reports"}
    pipeline.start_worker()
    await pipeline.send(
        seg("group", "u1", 1, groupId="acme", traits={"name": "Acme", "account_id": "A-1"}),
        seg("identify", "u1", 2, traits={"email": "Bo.Smith@Example.COM"}, timestamp="2026-11-20T12:02:00+02:00"),
        seg("track", "u1", 3, event="Report Built", properties={**usage, "total": 4}),  # 2026-11-20: backdated
        seg("track", "u1", 4, event="Report Built", properties=usage, timestamp=own),
        seg("track", "u1", 5, event="Report Shared", properties={"product_id": "analytics"}),  # a plain track
    )
    state = await pipeline.eventually(
        pipeline.csb_state, lambda s: s["features"] and len(s["events"]) == 1, what="CSB features and the track"
    )
    requests = await pipeline.csb_requests()
    assert paths(requests) == [CSB + "account", CSB + "identify", CSB + "feature", CSB + "feature", CSB + "track"]
    assert [r["status"] for r in requests] == [200] * 5
    assert requests[1]["json"]["type"] == "user" and requests[1]["json"]["timestamp"] == "2026-11-20T10:02:00Z"
    backdated, today = requests[2]["json"], requests[3]["json"]
    assert {
        k: backdated[k] for k in ("type", "accountId", "userId", "productId", "moduleId", "featureId", "total")
    } == {
        "type": "feature",
        "accountId": "A-1",
        "userId": "u1",
        "productId": "analytics",
        "moduleId": "reports",
        "featureId": "Report Built",
        "total": 4,
    }
    sent_at = datetime.fromisoformat(backdated["timestamp"])
    assert started - timedelta(seconds=1) <= sent_at <= datetime.now(UTC)
    if datetime.now(UTC).date() == started.date():  # no GMT midnight passed during the test
        assert today["timestamp"] == own.replace("+00:00", "Z") and today["total"] == 1
    assert state["features"] == {"A-1": {"analytics": {"reports": {"Report Built": 5}}}}
    assert [e["event"] for e in state["events"]] == ["Report Shared"]

    cs = await pipeline.eventually(pipeline.cs_requests, lambda r: len(r) >= 3, what="three ClientSuccess events")
    assert {r["json"]["identity"]["user"]["email"] for r in cs} == {"bo.smith@example.com"}
    assert [r["json"].get("timestamp") for r in cs][0] == "2026-11-20T10:03:00Z"
