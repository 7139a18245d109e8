"""Records in the tables outlive the code that wrote them: a worker must read what an
older worker stored (rolling upgrades), and refuse, clearly, what a newer one did.

The records below are frozen copies of what version 1 of each record looks like in
the changelog. Change the code, never these: a test that fails here means the new
code cannot read the state of a running deployment."""

from __future__ import annotations

import json

import pytest

from streams.core.dedupe import Seen
from streams.core.pending import Pending
from streams.core.state import GroupState, UserState

USER_V1 = (
    '{"v": 1, "key": "u1", "user_id": "u1", "traits": {"firstName": "Ada", "lastName": "L", "email": "a@x.io",'
    ' "account_id": "A1"}, "group_id": "acme", "groups": ["acme"], "csb_account_id": "A1", "csb_user_id": null,'
    ' "first_seen": "2026-11-20T10:00:00+00:00", "last_seen": "2026-11-20T10:01:00+00:00", "anonymous_ids": [],'
    ' "merged_into": null}'
)
GROUP_V1 = (
    '{"v": 1, "group_id": "acme", "name": "Acme", "traits": {"name": "Acme", "account_id": "acc"},'
    ' "csb_account_id": "acc", "updated_at": "2026-11-20T10:01:00+00:00"}'
)
# A pending record as the first release wrote it: no "parked" queue yet.
PENDING_V1_BEFORE_PARKING = (
    '{"v": 1, "next_seq": 3, "queues": {"clientsuccess": {"held": [{"seq": 1, "held_at": 1000.0,'
    ' "raw": "{\\"type\\": \\"track\\"}", "source": {"topic": "t", "partition": 0, "offset": 5}}],'
    ' "releasing": [{"seq": 2, "held_at": 1001.0, "raw": "{}", "source": {}}]}}}'
)
SEEN_V1 = '{"v": 1, "ids": {"m1": [7, 100.0]}}'
# Written before records carried a version at all.
USER_UNVERSIONED = '{"key": "u2", "user_id": "u2", "traits": {"plan": "pro"}}'


def test_a_version_1_user_record_is_read_with_every_field():
    user = UserState.from_dict(json.loads(USER_V1))
    # Version 2 keeps CustomerSuccessBox's ids in its own slot; version 1's fields move there.
    assert (user.key, user.group_id, user.slot("customersuccessbox")) == ("u1", "acme", {"account_id": "A1"})
    assert user.traits["firstName"] == "Ada"
    assert list(user.groups) == ["acme"]
    assert UserState.from_dict(user.to_dict()) == user


def test_a_version_1_group_record_is_read():
    group = GroupState.from_dict(json.loads(GROUP_V1))
    assert (group.group_id, group.name, group.slot("customersuccessbox")) == ("acme", "Acme", {"account_id": "acc"})
    assert GroupState.from_dict(group.to_dict()) == group


def test_a_pending_record_from_before_parking_is_read_with_an_empty_parked_queue():
    pending = Pending.from_dict(json.loads(PENDING_V1_BEFORE_PARKING))
    queue = pending.queue("clientsuccess")
    assert [i.seq for i in queue.held] == [1] and [i.seq for i in queue.releasing] == [2]
    assert queue.parked == ()
    assert pending.next_seq == 3
    assert Pending.from_dict(pending.to_dict()) == pending


def test_a_dedupe_record_is_read():
    assert Seen.from_dict(json.loads(SEEN_V1)).ids == {"m1": (7, 100.0)}


def test_a_record_without_a_version_is_read_as_version_1():
    user = UserState.from_dict(json.loads(USER_UNVERSIONED))
    assert user.key == "u2" and user.traits == {"plan": "pro"}


@pytest.mark.parametrize(
    "reader, record",
    [
        (UserState.from_dict, USER_V1),
        (GroupState.from_dict, GROUP_V1),
        (Pending.from_dict, PENDING_V1_BEFORE_PARKING),
        (Seen.from_dict, SEEN_V1),
    ],
)
def test_a_record_from_a_newer_worker_is_refused_clearly(reader, record):
    data = json.loads(record)
    data["v"] = 99
    with pytest.raises(ValueError, match="version 99 is newer than this worker"):
        reader(data)


@pytest.mark.e2e
async def test_a_worker_takes_over_state_an_older_worker_left_in_the_changelogs(pipeline):
    """A rolling upgrade on the real broker: the records above are put in the tables'
    changelogs as an older worker left them, and a worker of this version, starting on
    an empty data dir, restores them and carries on from them."""
    from aiokafka import AIOKafkaProducer

    from streams.partitioner import owner_partition
    from streams.runtime.topics import ensure_topics
    from streams.settings import Settings
    from tests.test_e2e_admin import get_json, wait_ready

    await ensure_topics(Settings.from_env(pipeline.worker_env()))
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.bootstrap, acks="all")
    await producer.start()
    try:
        # Faust's table records: JSON key, JSON value, in the user's by-user partition.
        for table, key, record in (
            ("users", "u1", USER_V1),
            ("users", "u2", USER_UNVERSIONED),
            ("groups", "acme", GROUP_V1),
        ):
            await producer.send_and_wait(
                f"{pipeline.name}-{table}-changelog",
                record.encode(),
                key=json.dumps(key).encode(),
                partition=owner_partition(key, pipeline.partitions),
            )
    finally:
        await producer.stop()

    worker = pipeline.start_worker()
    await wait_ready(pipeline, worker)
    await pipeline.send(
        {"type": "track", "userId": "u1", "event": "After Upgrade", "messageId": "up-1"},
        {"type": "group", "userId": "u2", "groupId": "acme", "messageId": "up-2"},
    )
    # u1's group, its name and u1's CustomerSuccessBox account all come from the old records.
    cs = await pipeline.eventually(
        pipeline.cs_state,
        lambda s: s["organizations"].get("acme", {}).get("events"),
        what="u1's track at ClientSuccess",
    )
    assert cs["organizations"]["acme"]["name"] == "Acme"
    assert [(e["event"], e["user_id"]) for e in cs["organizations"]["acme"]["events"]] == [("After Upgrade", "u1")]
    csb = await pipeline.eventually(pipeline.csb_state, lambda s: s["events"], what="u1's track at CSB")
    assert [(e["event"], e["userId"], e["accountId"]) for e in csb["events"]] == [("After Upgrade", "u1", "A1")]
    # Both users were rewritten by this version, their old fields kept.
    _, u1 = await get_json(worker, "/users/u1")
    assert u1["v"] >= 1 and u1["traits"]["firstName"] == "Ada" and u1["first_seen"] == "2026-11-20T10:00:00+00:00"
    _, u2 = await pipeline.eventually(
        lambda: get_json(worker, "/users/u2"),
        lambda a: a[0] == 200 and a[1].get("group_id") == "acme",
        what="u2 joined acme",
    )
    assert u2["v"] >= 1 and u2["traits"] == {"plan": "pro"}


def test_a_scan_over_records_leaves_out_and_counts_those_from_a_newer_worker():
    from streams.core.versions import Readable

    newer = {**json.loads(USER_V1), "v": 99}
    users = Readable(UserState.from_dict)
    read = list(users.each([("u1", json.loads(USER_V1)), ("u9", newer), ("u2", json.loads(USER_UNVERSIONED))]))
    assert [(key, user.key) for key, user in read] == [("u1", "u1"), ("u2", "u2")]
    assert users.skipped == 1
    with pytest.raises(KeyError):  # only the errors it is given are skipped
        list(Readable(lambda data: data["missing"]).each([("k", {})]))
    assert list(Readable(lambda data: data["missing"], errors=(KeyError,)).each([("k", {})])) == []
