"""The naive relay of the benchmark (bench/naive.py) sends, for a track it can attribute,
exactly the requests cs-relay's mappings build: the comparison is about the work
around the requests, not about different requests. Pure, no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bench import drain, mix, naive
from streams.core.decision import Send
from streams.core.reducers import apply_to_group, apply_to_user
from streams.core.segment import parse
from streams.destinations.clientsuccess import PLUGIN as CS_PLUGIN
from streams.destinations.clientsuccess import mapping as cs_mapping
from streams.destinations.clientsuccess.settings import ClientSuccessSettings
from streams.destinations.customersuccessbox import PLUGIN as CSB_PLUGIN
from streams.destinations.customersuccessbox import mapping as csb_mapping
from streams.destinations.customersuccessbox.memory import MEMORY
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings
from streams.envreader import Secret

PARTNERS = naive.Partners("http://cs.test", "demo source/1", "cs-key", "http://csb.test", "csb-key")
CS = ClientSuccessSettings(source_id="demo source/1", api_key=Secret("cs-key"), base_url="http://cs.test")
CSB = CustomerSuccessBoxSettings(api_key=Secret("csb-key"), base_url="http://csb.test")


def _cs_relay_requests(group_call: dict, track: dict, now: datetime) -> list[tuple[str, dict]]:
    """What cs-relay's mappings send for `track` after the user's `group_call`."""
    stamp = "2026-11-30T00:00:00Z"
    group_msg, track_msg = parse(json.dumps(group_call).encode()), parse(json.dumps(track).encode())
    group = apply_to_group(None, group_msg, stamp, [MEMORY])
    user = apply_to_user(None, group_msg, stamp, memories=[MEMORY])
    user = apply_to_user(user, track_msg, stamp, memories=[MEMORY])

    def lookup(group_id: str):
        return group if group_id == group.group_id else None

    cs = cs_mapping.decide(CS, track_msg, user, lookup)
    csb = csb_mapping.decide_at(CSB, track_msg, user, lookup, now)
    assert isinstance(cs, Send) and isinstance(csb, Send)
    return [
        ("http://cs.test" + cs.request.path, cs.request.json),
        ("http://csb.test" + csb.request.path, csb.request.json),
    ]


@pytest.mark.parametrize("variant", range(8))
@pytest.mark.parametrize("today", [True, False])
def test_naive_track_requests_equal_cs_relays_mapping(variant: int, today: bool):
    produced = 1_796_040_000_123_456 if today else 1_700_000_000_000_000  # 2026-11-30 / 2023-11-14
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    group_call = mix.message(mix.Call("group", 7, 7, variant), seq=0, run="t", produced_us=produced - 10)
    track = mix.message(mix.Call("track", 7, 7, variant, early=True), seq=1, run="t", produced_us=produced)
    assert "groupId" not in track["context"]  # attributable by the user's group call alone
    posts = naive.track_requests(track, naive.group_of(group_call), PARTNERS, now)
    assert [(p.url, p.body) for p in posts] == _cs_relay_requests(group_call, track, now)


def test_naive_sends_a_plain_track_to_csb_and_a_number_value_to_clientsuccess():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    group_call = {"type": "group", "messageId": "g", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}
    track = {
        "type": "track",
        "messageId": "t",
        "userId": "u1",
        "event": "Signed Up/Now",
        "timestamp": "2026-11-30T10:00:00+02:00",
        "properties": {"value": 2.5, "plan": "team"},
    }
    posts = naive.track_requests(track, naive.group_of(group_call), PARTNERS, now)
    assert [(p.url, p.body) for p in posts] == _cs_relay_requests(group_call, track, now)
    assert posts[0].url.endswith("/events/Signed%20Up%2FNow") and posts[1].url.endswith("/track")


def test_naive_credentials_are_the_ones_the_plugins_attach():
    posts = naive.track_requests(
        {"type": "track", "userId": "u", "event": "E", "properties": {}},
        {"id": "g", "name": "G"},
        PARTNERS,
        datetime.now(UTC),
    )
    cs_creds = CS_PLUGIN.credentials(CS)
    csb_creds = CSB_PLUGIN.credentials(CSB)
    assert dict(posts[0].params) == dict(cs_creds.query) and not posts[0].headers
    assert dict(posts[1].headers) == dict(csb_creds.headers) and not posts[1].params


def test_the_naive_relay_runs_on_asyncio_as_written_and_on_uvloop_when_faust_is_told():
    assert drain.COMMANDS[drain.NAIVE] == drain.COMMANDS[drain.NAIVE_UVLOOP]  # the same relay
    assert drain.FAUST_LOOP == {drain.NAIVE: "aio", drain.NAIVE_UVLOOP: "uvloop"}
    banner = "│ transport      │ [URL('kafka://127.0.0.1:29092')] +uvloop │"
    assert drain.loop_of(banner) == "uvloop"
    assert drain.loop_of(banner.replace(" +uvloop", "")) == "asyncio"
    assert drain.loop_of("[INFO] event loop: asyncio\n" + banner) == "asyncio"  # cs-relay's own line first
