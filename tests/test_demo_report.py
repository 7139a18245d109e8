"""The end of `make run`'s demo (devtools/demo_report.py): a table per partner built from
the mocks' state and the workers' metrics, then the console's address and token."""

from __future__ import annotations

from devtools.demo_report import DEV_ADMIN_TOKEN, PartnerRow, accounts_and_users, render, worker_counts
from devtools.dev import dev_environment
from streams.ops.observe import Snapshot, Stats, render_metrics


def metrics(held: int, pending: int, skipped: int, refused: int) -> str:
    stats = Stats()
    stats.dead_letter("delivery", "partner_refused", "clientsuccess")
    for _ in range(refused):
        stats.dead_letter("intake", "invalid_json", None)
    snapshot = Snapshot(
        destinations={"clientsuccess": "ClientSuccess"},
        counters={"held.clientsuccess": held, "skipped.clientsuccess": skipped},
        stats=stats,
        pending={"clientsuccess": {"held": pending, "releasing": 0, "parked": 1}},
        lag={},
        unacknowledged=0,
        ready=True,
    )
    return render_metrics(snapshot).decode()


def test_worker_counts_are_summed_over_the_workers():
    counts = worker_counts([metrics(5, 1, 10, 2), metrics(3, 0, 8, 1)])
    assert counts["clientsuccess"] == {"held": 8, "pending": 1, "skipped": 18, "dead_lettered": 2}
    assert counts[""]["dead_lettered"] == 3  # refused before any destination


def test_accounts_and_users_by_the_shape_of_a_mocks_state():
    clientsuccess = {"organizations": {"acme": {"users": {"u1": {}, "u2": {}}}, "globex": {"users": {"u1": {}}}}}
    assert accounts_and_users(clientsuccess) == (2, 2)
    csb = {"accounts": {"a1": {}, "a2": {}, "a3": {}}, "users": {"a1": {"u1": {}}, "a2": {"u2": {}, "u3": {}}}}
    assert accounts_and_users(csb) == (3, 3)
    calls = [
        {"type": "group", "groupId": "acme", "userId": "u1"},
        {"type": "track", "userId": "u2"},
        {"type": "page", "anonymousId": "a-1"},
    ]
    assert accounts_and_users({"messages": [{"message": c} for c in calls]}) == (1, 2)
    assert accounts_and_users({"something": "else"}) == (None, None)


def test_the_report_is_a_table_then_the_console_with_its_token():
    rows = [PartnerRow("ClientSuccess", 3, 6, 44, 44, 7, 18, 0), PartnerRow("Webhooks", None, None, 61, 60, 1, 1, 1)]
    text = render(rows, 65, 3, "http://127.0.0.1:6066", own_token=False)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("partner "))
    assert lines[header].split() == ["partner", "accounts", "users", "requests", "accepted", "held,", "released"] + [
        "skipped",
        "dead-lettered",
    ]
    assert lines[header + 1].split() == ["ClientSuccess", "3", "6", "44", "44", "7", "18", "0"]
    assert lines[header + 2].split() == ["Webhooks", "-", "-", "61", "60", "1", "1", "1"]
    assert "The demo sent 65 Segment calls; 3 were not valid" in text
    assert f"console   http://127.0.0.1:6066/console (development token: {DEV_ADMIN_TOKEN})" in text
    assert f"export CS_RELAY_ADMIN_TOKEN={DEV_ADMIN_TOKEN}" in text
    own = render(rows, 65, 3, "http://127.0.0.1:6066", own_token=True)
    assert "sign in with your CS_RELAY_ADMIN_TOKEN" in own and DEV_ADMIN_TOKEN not in own


def test_dev_workers_get_a_development_token_unless_one_is_set(monkeypatch):
    monkeypatch.delenv("CS_RELAY_ADMIN_TOKEN", raising=False)
    assert dev_environment("127.0.0.1:9092")["CS_RELAY_ADMIN_TOKEN"] == DEV_ADMIN_TOKEN
    monkeypatch.setenv("CS_RELAY_ADMIN_TOKEN", "my-own-token-0123456789")
    assert dev_environment("127.0.0.1:9092")["CS_RELAY_ADMIN_TOKEN"] == "my-own-token-0123456789"
