"""The first hour (issue 25.5), the pure parts: start-up log lines that are no errors,
`inspect`'s readable records and its note on `group_copy`, the hint on a 401."""

from __future__ import annotations

import logging
import time

from aiokafka import errors as kafka_errors

from streams.cli.inspection import group_copy_note, readable, token_hint
from streams.ops.logs import COORDINATOR_LOGGER, StartupNoise, quiet_startup_noise


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def coordinator_lines(noise: StartupNoise, *errors: Exception) -> list[tuple[str, str]]:
    """What aiokafka's coordinator logger writes for each error, with `noise` on it."""
    logger = logging.getLogger(COORDINATOR_LOGGER)
    collect = Collect()
    before = logger.filters[:]  # a worker's own filter, had this process installed one
    logger.addHandler(collect)
    logger.filters[:] = [noise]
    try:
        for error in errors:
            # the very call aiokafka makes (aiokafka/consumer/group_coordinator.py)
            logger.error("Group Coordinator Request failed: %s", error)
    finally:
        logger.filters[:] = before
        logger.removeHandler(collect)
    return [(r.levelname, r.getMessage()) for r in collect.records]


def test_a_coordinator_not_elected_yet_is_info_at_start_up_and_an_error_after():
    not_yet = kafka_errors.GroupCoordinatorNotAvailableError()
    early = coordinator_lines(StartupNoise(grace=60), not_yet)
    assert early == [
        (
            "INFO",
            "Kafka has no coordinator for this consumer group yet ([Error 15] GroupCoordinatorNotAvailableError); "
            "normal at a first start, retrying",
        )
    ]
    # After the grace period the same answer is a real problem: logged as aiokafka logs it.
    late = coordinator_lines(StartupNoise(grace=60, started=time.monotonic() - 61), not_yet)
    assert late == [("ERROR", "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError")]
    # Any other error stays an error, even at start-up.
    denied = kafka_errors.GroupAuthorizationFailedError()
    assert coordinator_lines(StartupNoise(grace=60), denied)[0][0] == "ERROR"


def test_the_filter_is_installed_once():
    logger = logging.getLogger(COORDINATOR_LOGGER)
    before = logger.filters[:]
    try:
        first = quiet_startup_noise()
        assert quiet_startup_noise() is first
        assert sum(isinstance(f, StartupNoise) for f in logger.filters) == 1
    finally:
        logger.filters[:] = before


def test_inspect_shows_times_as_iso_and_held_calls_as_json():
    pending = {
        "v": 3,
        "next_seq": 7,
        "queues": {
            "clientsuccess": {
                "held": [{"seq": 5, "held_at": 1796083200.25, "raw": '{"type":"track","event":"E"}', "source": {}}],
                "releasing": [],
                "parked": [{"seq": 6, "first_failed_at": 1796083201, "next_at": 1796083211.5, "attempts": 2}],
            }
        },
    }
    assert readable(pending) == {
        "queues": {
            "clientsuccess": {
                "held": [
                    {
                        "held_at": "2026-12-01T00:00:00.250Z",
                        "message": {"type": "track", "event": "E"},
                        "source": {},
                    }
                ],
                "releasing": [],
                "parked": [
                    {
                        "first_failed_at": "2026-12-01T00:00:01.000Z",
                        "next_at": "2026-12-01T00:00:11.500Z",
                        "attempts": 2,
                    }
                ],
            }
        }
    }
    user = {"v": 2, "key": "u1", "first_seen": "2026-12-01T00:00:00Z", "merging": "a1", "merging_since": 1796083200}
    assert readable(user) == {
        "key": "u1",
        "first_seen": "2026-12-01T00:00:00Z",
        "merging": "a1",
        "merging_since": "2026-12-01T00:00:00.000Z",
    }


def test_the_note_on_group_copy_says_which_copy_partners_receive():
    copy = {"group_id": "acme", "traits": {"employees": 2672}, "updated_at": "2026-12-01T10:00:00Z"}
    user = {"key": "u-alice", "group_copy": copy}
    newer = {"group_id": "acme", "traits": {"employees": 1255}, "updated_at": "2026-12-01T11:00:00Z"}
    note = group_copy_note(user, newer)
    assert note is not None
    assert note.startswith("group_copy: this user's own copy of group 'acme', as its last group call left it")
    assert "cs-relay inspect group acme" in note and note.endswith(
        "here the group's record (updated 2026-12-01T11:00:00Z)."
    )
    older = dict(newer, updated_at="2026-12-01T09:00:00Z")
    assert (group_copy_note(user, older) or "").endswith("here this copy (the group's record is not newer).")
    assert (group_copy_note(user, None) or "").endswith("they receive this copy.")
    assert group_copy_note({"key": "u2"}, None) is None


def test_a_401_says_to_export_the_admin_token():
    assert "export CS_RELAY_ADMIN_TOKEN=" in token_hint("")
    assert "not the worker's" in token_hint("a-token-that-is-wrong")
