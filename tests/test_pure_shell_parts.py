"""Settings, redaction, dead-letter headers, HTTP outcome rules, in-order acks, and topic creation errors."""

import asyncio
import random
import socket

import pytest

from streams.core.deadletter import dead_letter_headers, read_headers
from streams.core.redact import redact
from streams.core.retry import Outcome, backoff, classify, retry_after_seconds
from streams.runtime.acks import AckTracker
from streams.runtime.catchup import CatchUp
from streams.runtime.parking import ParkingMarks
from streams.runtime.topics import creation_errors
from streams.settings import Settings, SettingsError


def test_settings_defaults_and_disabled_destinations():
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == "localhost:9092" and s.input_topic == "segment-events"
    assert s.app_id == "cs-relay" and s.web_port == 6066 and s.dlq_topic == "segment-events-dlq"
    assert not s.destinations["clientsuccess"].enabled and not s.destinations["customersuccessbox"].enabled
    assert s.destinations["clientsuccess"].base_url == "https://usage.clientsuccess.com"


def test_the_advertised_web_host_is_never_a_wildcard():
    """Other workers forward inspection requests to the URL a worker advertises; behind
    a wildcard bind (Docker) every worker would advertise the same 0.0.0.0."""
    assert Settings.from_env({}).advertised_web_host == "127.0.0.1"
    token = {"CS_RELAY_ADMIN_TOKEN": "a-token-for-a-wider-bind"}  # required beyond loopback
    assert Settings.from_env({"CS_RELAY_WEB_HOST": "10.0.0.5", **token}).advertised_web_host == "10.0.0.5"
    assert Settings.from_env({"CS_RELAY_WEB_HOST": "0.0.0.0", **token}).advertised_web_host == socket.gethostname()
    explicit = Settings.from_env({"CS_RELAY_WEB_HOST": "0.0.0.0", "CS_RELAY_WEB_ADVERTISED_HOST": "worker-2", **token})
    assert explicit.advertised_web_host == "worker-2" and explicit.web_host == "0.0.0.0"
    # IPv6 addresses go in brackets, as the canonical URL needs them.
    assert Settings.from_env({"CS_RELAY_WEB_ADVERTISED_HOST": "fe80::1"}).advertised_web_host == "[fe80::1]"
    assert Settings.from_env({"CS_RELAY_WEB_ADVERTISED_HOST": "[::1]"}).advertised_web_host == "[::1]"
    assert Settings.from_env({"CS_RELAY_WEB_HOST": "::1"}).advertised_web_host == "[::1]"


@pytest.mark.parametrize(
    "name,value",
    [
        ("CS_RELAY_WEB_PORT", "seventy"),
        ("CS_RELAY_WEB_PORT", "70000"),
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port"),
        ("CLIENTSUCCESS_BASE_URL", "ftp://x"),
        ("CSB_BASE_URL", "https://user:pw@x.example"),
        ("CS_RELAY_INPUT_TOPIC", "bad topic"),
        ("CS_RELAY_HTTP_TIMEOUT", "0"),
        ("CS_RELAY_LOG_LEVEL", "loud"),
        ("CS_RELAY_WEB_ADVERTISED_HOST", "0.0.0.0"),
        ("CS_RELAY_WEB_ADVERTISED_HOST", "http://worker-1:6066"),
        ("CS_RELAY_WEB_ADVERTISED_HOST", "worker-1:6066"),
        ("CS_RELAY_WEB_ADVERTISED_HOST", "[::1]:6066"),
        ("CS_RELAY_WEB_ADVERTISED_HOST", "[::]"),
        ("CS_RELAY_WEB_ADVERTISED_HOST", "worker 1"),
    ],
)
def test_bad_settings_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_secrets_never_show_in_repr_or_redacted_settings():
    s = Settings.from_env(
        {
            "CLIENTSUCCESS_API_KEY": "cs-secret-1",
            "CSB_API_KEY": "csb-secret-2",
            "CLIENTSUCCESS_SOURCE_ID": "src",
            "CSB_BASE_URL": "http://127.0.0.1:1",
        }
    )
    text = repr(s) + str(s.redacted())
    assert "cs-secret-1" not in text and "csb-secret-2" not in text
    assert s.destinations["clientsuccess"].enabled and s.destinations["customersuccessbox"].enabled
    assert sorted(s.secrets()) == ["cs-secret-1", "csb-secret-2"]


def test_redact_masks_known_secrets_query_keys_and_auth_headers():
    text = "GET /x?api_key=abc123&y=1 Authorization: Bearer tok.en-9 and cs-secret-1"
    out = redact(text, ["cs-secret-1"])
    assert "abc123" not in out and "tok.en-9" not in out and "cs-secret-1" not in out


def test_dead_letter_headers_round_trip_and_are_redacted():
    h = dead_letter_headers(
        reason="partner_refused",
        detail="answered 401 for key s3cret",
        stage="delivery",
        source={"topic": "t", "partition": 2, "offset": 40},
        destination="clientsuccess",
        status=401,
        secrets=["s3cret"],
    )
    back = read_headers(h.items())
    assert back["reason"] == "partner_refused" and back["stage"] == "delivery"
    assert back["source-partition"] == "2" and back["source-offset"] == "40" and back["status"] == "401"
    assert "s3cret" not in back["detail"]


@pytest.mark.parametrize(
    "status,outcome",
    [
        (200, Outcome.DONE),
        (201, Outcome.DONE),
        (400, Outcome.FAIL),
        (401, Outcome.FAIL),
        (403, Outcome.FAIL),
        (404, Outcome.FAIL),
        (413, Outcome.FAIL),
        (422, Outcome.FAIL),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (None, Outcome.RETRY),
    ],
)
def test_classify(status, outcome):
    assert classify(status) is outcome


def test_backoff_grows_is_capped_and_honours_retry_after():
    rng = random.Random(1)
    delays = [backoff(a, None, base=1, cap=10, rng=rng) for a in range(1, 8)]
    assert all(0.5 <= d <= 10 for d in delays) and delays[-1] >= 5
    assert backoff(1, 30.0, base=1, cap=10, rng=rng) == 30.0
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("soon") is None


async def test_acks_are_given_in_offset_order_per_partition():
    acked = []
    tracker = AckTracker()
    gates = [asyncio.Event() for _ in range(3)]
    for i, gate in enumerate(gates):
        tracker.add("tp0", lambda i=i: acked.append(i), [gate.wait()])
    tracker.add("tp1", lambda: acked.append("other"), [])
    gates[2].set()
    gates[1].set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert acked == ["other"]  # 1 and 2 are done but 0 is not: nothing of tp0 is acked
    gates[0].set()
    assert await tracker.drain(timeout=2)
    assert acked == ["other", 0, 1, 2]


async def test_failed_work_is_never_acknowledged():
    acked = []
    tracker = AckTracker()

    async def boom():
        raise RuntimeError("x")

    tracker.add("tp", lambda: acked.append(1), [boom()])
    assert not await tracker.drain(timeout=0.2)
    assert acked == []


def test_parking_marks_of_revoked_partitions_are_forgotten():
    """A retry mark left behind when a partition moves away would, if the partition came
    back, skip that user's parked head forever: the next owner applied the `retried`
    record that should have cleared it."""
    partition_of = {"u0": 0, "u1": 1, "u2": 2}.__getitem__
    marks = ParkingMarks()
    for user in ("u0", "u1", "u2"):
        marks.parking[(user, "clientsuccess")] += 1
        marks.retrying.add((user, "clientsuccess", 7))
        marks.retry_due_at[user] = 100.0
    marks.forget({0, 2}, partition_of)
    assert dict(marks.parking) == {("u1", "clientsuccess"): 1}
    assert marks.retrying == {("u1", "clientsuccess", 7)}
    assert marks.retry_due_at == {"u1": 100.0}
    marks.forget([], partition_of)
    assert marks.retrying == {("u1", "clientsuccess", 7)}
    marks.forget([1], partition_of)
    assert not marks.parking and not marks.retrying and not marks.retry_due_at


def test_a_rebalance_keeps_the_marks_of_partitions_that_stay():
    """Faust revokes every partition at each rebalance and gives most back: a retry
    still running must keep its mark, or the next due tick sends it a second time."""
    partition_of = {"u0": 0, "u1": 1, "u2": 2}.__getitem__
    marks = ParkingMarks()
    marks.reassigned({0, 1, 2}, partition_of)
    for user in ("u0", "u1", "u2"):
        marks.retrying.add((user, "clientsuccess", 7))
    marks.reassigned({0, 1}, partition_of)  # a worker joined and took partition 2
    assert marks.retrying == {("u0", "clientsuccess", 7), ("u1", "clientsuccess", 7)}
    marks.reassigned({0, 1, 2}, partition_of)  # it came back; u2's old mark stays forgotten
    marks.retrying.add(("u2", "clientsuccess", 8))
    marks.reassigned({0, 1, 2}, partition_of)  # a rebalance that changed nothing for us
    assert len(marks.retrying) == 3
    marks.reassigned(set(), partition_of)  # this worker left the group
    assert not marks.retrying


class _PerPartitionStore:
    """The shape of Faust's RocksDB store that `items_of_partition` reads: one database
    per partition, raw items, and the table's serializers."""

    def __init__(self, dbs: dict[int, dict[bytes, bytes]]) -> None:
        self._dbs = dbs

    def _visible_items(self, db: dict[bytes, bytes]):
        return iter(db.items())

    def _decode_key(self, raw: bytes) -> str:
        return raw.decode()

    def _decode_value(self, raw: bytes) -> int:
        return int(raw)


def test_items_of_partition_reads_only_that_partitions_database():
    from types import SimpleNamespace

    from streams.runtime.tablescan import items_of_partition

    def owner(key: str) -> int:
        return int(key[1])

    store = _PerPartitionStore({0: {b"u0a": b"1", b"u0b": b"2", b"u1x": b"9"}, 1: {b"u1c": b"3"}})
    table = SimpleNamespace(data=store, items=lambda: pytest.fail("a per-partition store is not scanned whole"))
    assert list(items_of_partition(table, 0, owner)) == [("u0a", 1), ("u0b", 2)]  # a stray key is left out
    assert list(items_of_partition(table, 1, owner)) == [("u1c", 3)]
    assert list(items_of_partition(table, 2, owner)) == []
    # A store without per-partition databases (Faust's memory store) is filtered by owner.
    memory = SimpleNamespace(data=object(), items=lambda: {"u0a": 1, "u1c": 3}.items())
    assert list(items_of_partition(memory, 1, owner)) == [("u1c", 3)]


def test_creation_errors_skip_success_and_topics_created_meanwhile():
    assert creation_errors([("a", 0), ("b", 36, "exists"), ("c", 38, "Replication factor: 2 larger than 1")]) == [
        "'c': InvalidReplicationFactorError (Replication factor: 2 larger than 1)"
    ]
    assert creation_errors([("d", 37)]) == ["'d': InvalidPartitionsError"]
    # Retriable (request timed out, not the controller): left to the wait for the topics.
    assert creation_errors([("e", 7, "timed out"), ("f", 41)]) == []


def test_faust_patches_refuse_a_faust_they_were_not_copied_from():
    import faust

    from streams.runtime.faust_fixes import FAUST_VERSION, check_version

    check_version(faust.__version__)  # the pinned version is the one installed
    with pytest.raises(RuntimeError, match=rf"faust-streaming=={FAUST_VERSION}.*FAUST_VERSION"):
        check_version("0.16.0")


async def test_cancelled_work_is_never_acknowledged():
    """Work cancelled (a revoked partition's deliveries, a stop) did not happen: the
    event stays unacknowledged, so that whoever reads the partition next does it."""
    acked = []
    tracker = AckTracker()
    gate = asyncio.Event()
    work = asyncio.ensure_future(gate.wait())
    tracker.add("tp", lambda: acked.append(1), [work])
    await asyncio.sleep(0)
    work.cancel()
    assert not await tracker.drain(timeout=0.2)
    assert acked == []


async def test_forgotten_partitions_are_never_acknowledged_and_free_their_place():
    acked = []
    tracker = AckTracker()
    gates = [asyncio.Event(), asyncio.Event()]
    tracker.add("tp0", lambda: acked.append("old"), [gates[0].wait()])
    tracker.add("tp1", lambda: acked.append("kept"), [gates[1].wait()])
    assert tracker.in_flight == 2
    tracker.forget(["tp0"])
    assert tracker.in_flight == 1  # back-pressure counts only what may still be acknowledged
    tracker.add("tp0", lambda: acked.append("new"), [])  # the partition assigned again
    gates[0].set()
    gates[1].set()
    assert await tracker.drain(timeout=2)
    assert acked == ["new", "kept"]  # the forgotten event's late completion acknowledges nothing


async def test_a_partition_is_behind_until_this_assignment_s_own_token_is_read_back():
    catchup = CatchUp("w1")
    tokens = catchup.begin({0, 1})
    assert catchup.behind(0) and catchup.behind(1)
    assert not catchup.reached(0, "w2/1/0")  # another worker's record
    waiting = asyncio.ensure_future(catchup.wait(0, timeout=5.0))
    assert catchup.reached(0, tokens[0]) and await waiting
    assert not catchup.behind(0) and catchup.behind(1)
    again = catchup.begin({1})  # the next rebalance: partition 0 went elsewhere
    assert not catchup.reached(1, tokens[1]) and catchup.behind(1)  # the earlier assignment's record
    assert not await catchup.wait(1, timeout=0.01)  # not read back in time: the delivery parks
    catchup.forget([1])
    assert not catchup.behind(1) and await catchup.wait(1, timeout=0.01)
    assert catchup.reached(1, again[1]) is False


async def test_a_delivery_waiting_for_the_catch_up_gives_up_when_the_reading_loops_wait_for_it():
    """A backlog longer than the unacknowledged window: the caught-up record cannot be
    read before some of the waiting events are done, so they park at once."""
    acks = AckTracker()
    catchup = CatchUp("w1")
    catchup.begin({0})
    never = asyncio.get_running_loop().create_future()
    acks.add("tp", lambda: None, [never])
    reader = asyncio.ensure_future(acks.wait_below(1))  # the reading loop, at its limit
    # Given up as soon as the reader waits, long before the delivery deadline.
    assert not await asyncio.wait_for(catchup.wait(0, timeout=3600.0, give_up=acks.pressed), 5.0)
    never.set_result(None)
    await reader
    assert not acks.pressed.is_set()
