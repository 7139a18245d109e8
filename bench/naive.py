"""The naive relay: the baseline the benchmark measures cs-relay against (issue 13).

What a team writes first, and nothing more: one Faust agent on the input topic, a table
of each user's group (its id and name, from the user's group call), and per track call
two sequential aiohttp POSTs, ClientSuccess then CustomerSuccessBox, with the bodies and
credentials cs-relay would send for a track it can attribute at once. No holding (a
track of a user without a known group is dropped), no retries (an error answer is
ignored), no deduplication, no dead letters, no re-keying hop (the input must be keyed
by user, as the benchmark and `cs-relay ingest` produce it), no other call types.

It does carry cs-relay's fixes to Faust 0.15.3 (`streams.runtime.faust_fixes`, patches
1-3): they are bug fixes, not features, and without patch 1 a worker started on a
backlog drops the records it fetched before its post-recovery seek and sits idle on them
(seen in the first runs of this baseline). Not patch 4, cs-relay's fetch loop (a fetched
batch handed over at once): a speed-up of cs-relay's, not what a team writes first.

Run as its own worker process, with its own app id and data dir, configured by the
variables a cs-relay worker reads (`bench.harness.worker_env` writes them):

    python -m bench.naive worker -l info

`track_requests` (pure) builds the two requests; tests/test_bench_naive.py checks them
against cs-relay's own mappings (streams/destinations/*/mapping.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from streams.core.timestamps import format_utc, utc_date, utc_iso

CS_EVENTS = "/collector/1.0.0/projects/{source}/events/{event}"
CSB_API = "/api_js/v1_1"
FEATURE_ID_MAX = 64


@dataclass(frozen=True)
class Partners:
    """Where the two POSTs go and the credentials they carry."""

    cs_url: str
    cs_source_id: str
    cs_api_key: str
    csb_url: str
    csb_api_key: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Partners:
        return cls(
            cs_url=env["CLIENTSUCCESS_BASE_URL"].rstrip("/"),
            cs_source_id=env["CLIENTSUCCESS_SOURCE_ID"],
            cs_api_key=env["CLIENTSUCCESS_API_KEY"],
            csb_url=env["CSB_BASE_URL"].rstrip("/"),
            csb_api_key=env["CSB_API_KEY"],
        )


@dataclass(frozen=True)
class Post:
    """One request: absolute URL, JSON body, query parameters and headers."""

    url: str
    body: dict[str, Any]
    params: Mapping[str, str]
    headers: Mapping[str, str]


def group_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """What the table keeps of a group call: the group's id and name."""
    traits = message.get("traits") or {}
    return {"id": message["groupId"], "name": traits.get("name")}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def track_requests(
    message: Mapping[str, Any], group: Mapping[str, Any], partners: Partners, now: datetime
) -> list[Post]:
    """The two POSTs of a track call by a user in `group`: a ClientSuccess Usage API
    event, then a CustomerSuccessBox feature call (a track with `product_id` and
    `module_id`) or track call. `now` stamps a feature call whose own timestamp is not
    of today (GMT), as CustomerSuccessBox requires."""
    user = message.get("userId") or message.get("anonymousId")
    event = message["event"]
    properties = message.get("properties") or {}
    timestamp = message.get("timestamp")
    value = properties.get("value")
    cs_body: dict[str, Any] = {
        "identity": {"organization": {"id": group["id"], "name": group["name"]}, "user": {"id": user}},
        "value": value if _number(value) else 1,
    }
    if timestamp:
        cs_body["timestamp"] = utc_iso(timestamp)
    cs_path = CS_EVENTS.format(source=quote(partners.cs_source_id, safe=""), event=quote(event, safe=""))
    csb_body: dict[str, Any] = {"accountId": group["id"], "userId": user}
    product, module = properties.get("product_id"), properties.get("module_id")
    if product and module:
        total = properties.get("total")
        csb_body.update(
            type="feature",
            productId=str(product)[:FEATURE_ID_MAX],
            moduleId=str(module)[:FEATURE_ID_MAX],
            featureId=event[:FEATURE_ID_MAX],
            total=total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else 1,
            timestamp=utc_iso(timestamp) if timestamp and utc_date(timestamp) == now.date() else format_utc(now),
        )
        endpoint = "feature"
    else:
        csb_body.update(type="track", event=event, properties=dict(properties))
        if timestamp:
            csb_body["timestamp"] = utc_iso(timestamp)
        endpoint = "track"
    return [
        Post(partners.cs_url + cs_path, cs_body, {"api_key": partners.cs_api_key}, {}),
        Post(
            f"{partners.csb_url}{CSB_API}/{endpoint}", csb_body, {}, {"Authorization": f"Bearer {partners.csb_api_key}"}
        ),
    ]


def create_app(env: Mapping[str, str]) -> Any:
    """The naive relay's Faust app, configured from `env` (cs-relay's variable names)."""
    import aiohttp
    import faust

    from streams.runtime import faust_fixes

    class App(faust.App):
        def _new_producer(self) -> Any:
            return faust_fixes.with_bounded_flush(super()._new_producer())  # patch 2

    faust_fixes.install(fetch_loop=False)  # patches 1 and 3; Faust's own fetch loop
    partners = Partners.from_env(env)
    app = App(
        env["CS_RELAY_APP_ID"],
        broker=[f"kafka://{s.strip()}" for s in env["KAFKA_BOOTSTRAP_SERVERS"].split(",")],
        store="rocksdb://",
        datadir=env["CS_RELAY_DATA_DIR"],
        topic_partitions=int(env.get("CS_RELAY_TOPIC_PARTITIONS", "8")),
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=int(env.get("CS_RELAY_WEB_PORT", "6066")),
    )
    source = app.topic(env["CS_RELAY_INPUT_TOPIC"], key_serializer="raw", value_serializer="raw")
    user_groups = app.Table("user_groups", default=None)

    @app.agent(source)
    async def relay(stream: Any) -> None:
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
            async for raw in stream:
                message = json.loads(raw)
                user = message.get("userId") or message.get("anonymousId")
                if message.get("type") == "group":
                    user_groups[user] = group_of(message)
                elif message.get("type") == "track":
                    group = user_groups[user]
                    if group is None:
                        continue  # no holding
                    for post in track_requests(message, group, partners, datetime.now(UTC)):
                        async with session.post(
                            post.url, json=post.body, params=post.params, headers=post.headers
                        ) as r:
                            await r.read()  # no retries: the answer is not looked at

    return app


def main() -> None:
    create_app(os.environ).main()


if __name__ == "__main__":
    sys.argv[0] = "bench.naive"
    main()
