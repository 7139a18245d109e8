"""Ids and names longer than their byte limits are refused at intake (issue 22, finding 1):
they would end up in state rows that the broker then refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.core.idlimits import MAX_ID_BYTES, MAX_NAME_BYTES
from streams.core.message import InvalidMessage
from streams.core.reasons import INTAKE, Reason
from streams.core.segment import parse, validate


def call(type_: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "userId": "u1", "messageId": "m-1"}
    body.update(
        {"group": {"groupId": "g1"}, "track": {"event": "Signed In"}, "alias": {"previousId": "a1"}}.get(type_, {})
    )
    body.update(fields)
    return body


LONG_ID = "é" * (MAX_ID_BYTES // 2 + 1)  # within the limit in characters, over it in bytes
LONG_NAME = "n" * (MAX_NAME_BYTES + 1)


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (call("track", userId=LONG_ID), Reason.ID_TOO_LONG, "userId"),
        (call("track", userId=None, anonymousId=LONG_ID), Reason.ID_TOO_LONG, "anonymousId"),
        (call("group", groupId=LONG_ID), Reason.ID_TOO_LONG, "groupId"),
        (call("group", groupId=int("9" * (MAX_ID_BYTES + 1))), Reason.ID_TOO_LONG, "groupId"),
        (call("alias", previousId=LONG_ID), Reason.ID_TOO_LONG, "previousId"),
        (call("track", context={"groupId": LONG_ID}), Reason.ID_TOO_LONG, "context.groupId"),
        (call("track", event=LONG_NAME), Reason.NAME_TOO_LONG, "event"),
        (call("page", name=LONG_NAME), Reason.NAME_TOO_LONG, "name"),
        (call("screen", category=LONG_NAME), Reason.NAME_TOO_LONG, "category"),
    ],
)
def test_a_call_with_a_too_long_id_or_name_is_refused_with_its_reason(body: dict[str, Any], reason: Reason, field: str):
    for check in (lambda: parse(json.dumps(body).encode()), lambda: validate(body)):
        with pytest.raises(InvalidMessage) as info:
            check()
        assert info.value.reason is reason and info.value.field == field
        assert f"'{field}'" in info.value.detail and "bytes, more than the limit of" in info.value.detail
    assert reason in INTAKE


def test_ids_and_names_at_their_limits_are_accepted():
    at_limit = "x" * MAX_ID_BYTES
    body = call(
        "track", userId=at_limit, anonymousId=at_limit, context={"groupId": at_limit}, event="e" * MAX_NAME_BYTES
    )
    msg = parse(json.dumps(body).encode())
    assert msg.user_id == at_limit and msg.context_group_id == at_limit
    assert parse(json.dumps(call("group", groupId=at_limit)).encode()).group_id == at_limit
    assert parse(json.dumps(call("page", name="p" * MAX_NAME_BYTES)).encode()).name == "p" * MAX_NAME_BYTES


def test_the_limits_are_documented():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text() + (root / "README.md").read_text()
    assert f"{MAX_ID_BYTES} bytes" in text and f"{MAX_NAME_BYTES} bytes" in text
    architecture = (root / "docs" / "architecture.md").read_text()
    from streams.core.aggregate import WINDOWS_MAX_BYTES
    from streams.core.pendingrows import max_events_within
    from streams.core.traits import IDS_MAX_BYTES, SLOT_MAX_BYTES
    from streams.core.waiters import WAITERS_MAX_BYTES
    from streams.destinations import REGISTRY

    for constant in (WINDOWS_MAX_BYTES, IDS_MAX_BYTES, SLOT_MAX_BYTES, WAITERS_MAX_BYTES):
        assert f"{constant // 1024} KB" in architecture, constant
    keys = [p.key for p in REGISTRY]
    assert f"{max_events_within(keys):,} fit with three destinations" in architecture and len(keys) == 3
    assert f"{max_events_within([*keys, 'a-fourth']):,} with four" in architecture
    operations = (root / "docs" / "operations.md").read_text()
    for reason in INTAKE:
        assert f"`{reason.value}`" in operations, reason
