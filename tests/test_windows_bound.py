"""A user's row of aggregation windows keeps its byte bound (issue 22, finding 1): a user
with many distinct events in one window, each request carrying long traits, would
otherwise grow it past the changelog's record limit. What would pass the bound is sent
on its own instead."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.core.aggregate import WINDOWS_MAX_BYTES, Fold, Windows, fold_within
from streams.core.decision import PartnerRequest
from streams.core.traits import stored_size
from streams.runtime.runtime import Tables
from tests.runtime_world import World

HOUR = 3600


def request(event: str, name: str) -> PartnerRequest:
    body = {"identity": {"organization": {"id": "acme"}, "user": {"id": "u1", "name": name}}, "value": 1}
    return PartnerRequest("POST", f"/collector/1.0.0/projects/src/events/{event}", body)


def test_a_fold_that_would_pass_the_bound_is_returned_to_send_alone():
    windows, alone = Windows(), []
    name = "\x01" * 10_000  # 60 KB stored
    for n in range(40):
        windows, rest = fold_within(
            windows, [Fold("cs", request(f"E{n}", name), "value")], at=10.0, sizes={"cs": HOUR}, offset=n + 1
        )
        alone += rest
        assert stored_size(windows.to_dict()) <= WINDOWS_MAX_BYTES
    assert 0 < len(windows.windows) < 40 and len(alone) == 40 - len(windows.windows)
    assert windows.offset == 40  # every call counted as folded: a redo folds nothing again
    # a request of a window already open is still counted in it
    again, rest = fold_within(
        windows, [Fold("cs", request("E0", name), "value")], at=11.0, sizes={"cs": HOUR}, offset=41
    )
    assert rest == [] and sum(w.count for w in again.windows.values()) == len(windows.windows) + 1


async def test_the_runtime_sends_what_does_not_fit_at_once(tmp_path):
    path = tmp_path / "mappings.toml"
    path.write_text('[clientsuccess]\naggregate = "1h"\n')
    tables = Tables(users={}, pending={}, groups={}, seen={}, windows={})
    w = World({"CS_RELAY_MAPPINGS": str(path)}, tables=tables)
    w.now = datetime(2026, 11, 30, 10, 15, tzinfo=UTC).timestamp()
    await w.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await w.publish(type="identify", userId="u1", traits={"firstName": "\x01" * 5000}, messageId="i")
    for n in range(40):
        await w.publish(type="track", userId="u1", event=f"E{n}", messageId=f"e{n}")
    assert await w.settle()
    assert stored_size(w.tables.windows["u1"]) <= WINDOWS_MAX_BYTES
    opened = len(w.tables.windows["u1"]["windows"])
    assert 0 < opened < 40
    sent = [r.path.rsplit("/", 1)[-1] for r in w.client.requests]
    assert sent == [f"E{n}" for n in range(opened, 40)]  # the rest went alone, in order
    assert w.rt.counters["not_aggregated.clientsuccess"] == 40 - opened
