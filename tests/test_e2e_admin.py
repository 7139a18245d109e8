"""End to end: the worker's HTTP endpoints (streams.ops.admin) and the `inspect` / `status`
commands against real worker processes, the real broker and the mock partners."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import platform
import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import streams
from streams.cli.commands import main as cli_main
from streams.cli.inspection import readable
from streams.partitioner import owner_partition
from streams.testing.mocks import DEMO_CREDENTIALS
from tests.pipeline import Pipeline, Worker

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-6f1c2e9a7b"
WRITE_KEY = "write-key-0d4b8e2c91"


def seg(type_: str, user: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "userId": user,
        "messageId": f"{type_}-{user}-{n}",
        "timestamp": f"2026-11-20T10:{n:02d}:00Z",
        **fields,
    }


def url(worker: Worker, path: str) -> str:
    return f"http://127.0.0.1:{worker.web_port}{path}"


async def http(worker: Worker, path: str, token: str | None = None, **headers: str) -> tuple[int, dict[str, str], str]:
    """GET a worker page: (status, headers, body text); (0, {}, "") while it does not listen."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url(worker, path), headers=headers) as response:
                return response.status, dict(response.headers), await response.text()
    except aiohttp.ClientConnectionError:
        return 0, {}, ""


async def get_json(worker: Worker, path: str, token: str | None = None) -> tuple[int, Any]:
    status, _, body = await http(worker, path, token)
    return status, json.loads(body) if body else None


async def wait_ready(
    pipeline: Pipeline, worker: Worker, *, partitions: int | None = None, token: str | None = None
) -> dict:
    """Until /ready answers 200 (and, if given, the worker owns that many by-user partitions)."""
    by_user = f"{pipeline.name}-by-user"

    def done(answer: tuple[int, Any]) -> bool:
        status, body = answer
        return status == 200 and (partitions is None or len(body["partitions"][by_user]) == partitions)

    return (await pipeline.eventually(lambda: get_json(worker, "/ready", token), done, what="a ready worker"))[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_state_pages_metrics_status_and_the_commands(pipeline: Pipeline, capsys):
    worker = pipeline.start_worker()
    await pipeline.send(
        seg("group", "u1", 1, groupId="acme", traits={"name": "Acme", "account_id": "acc-1"}),
        seg("identify", "u1", 2, traits={"email": "u1@acme.io"}),
        seg("track", "u1", 3, event="Report Built"),
        seg("track", "u2", 4, event="Too Early"),  # u2 has no group yet: held for both partners
    )
    await pipeline.eventually(lambda: http(worker, "/health"), lambda a: a[0] == 200, what="a live worker")
    ready = await wait_ready(pipeline, worker)
    assert ready["recovery_remaining"] == {"active": 0, "standby": 0} and not ready["recovering"], ready

    status, user = await pipeline.eventually(
        lambda: get_json(worker, "/users/u1"), lambda a: a[0] == 200 and a[1]["traits"], what="u1's state"
    )
    assert user["group_id"] == "acme" and user["traits"] == {"email": "u1@acme.io"}
    # No token on loopback: a page of another site whose name now resolves to 127.0.0.1
    # (DNS rebinding) sends its own name as Host and is refused (issue 22, finding 10).
    status, _, body = await http(worker, "/users/u1", Host=f"rebind.attacker.example:{worker.web_port}")
    assert status == 403 and "u1@acme.io" not in body, body
    assert (await http(worker, "/users/u1", Host=f"localhost:{worker.web_port}"))[0] == 200
    # Version 2 records: CustomerSuccessBox's ids are in its slot (issue 12).
    assert user["slots"]["customersuccessbox"] == {"account_id": "acc-1"}
    # The group's record is written by whichever worker owns the group's partition of the
    # by-group topic, after u1's: await it too (CI once read it a moment too early: 404).
    status, group = await pipeline.eventually(
        lambda: get_json(worker, "/groups/acme"), lambda a: a[0] == 200, what="acme's state"
    )
    assert group["name"] == "Acme" and group["slots"]["customersuccessbox"] == {"account_id": "acc-1"}
    status, pending = await pipeline.eventually(
        lambda: get_json(worker, "/pending/u2"), lambda a: a[0] == 200, what="u2's waiting events"
    )
    held = {dest: [json.loads(i["raw"])["event"] for i in q["held"]] for dest, q in pending["queues"].items()}
    assert held == {"clientsuccess": ["Too Early"], "customersuccessbox": ["Too Early"]}

    for path in ("/users/nobody", "/pending/nobody", "/groups/nobody"):
        status, body = await get_json(worker, path)
        assert status == 404 and body["error"] == "not_found", (path, body)

    # Faust's own pages that dump tables or the cluster's layout are not served.
    for path in (
        "/table/",
        "/table/users",
        "/table/users/",
        "/table/users/u1/",
        "/router/",
        "/graph/",
        "/stats/",
        "/assignment/",
        "/performance/",
    ):
        assert (await http(worker, path))[0] == 404, path

    # Bound to 127.0.0.1 only (on Linux all of 127/8 is this machine: 127.0.0.2 would answer a 0.0.0.0 bind).
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", worker.web_port), timeout=2).close()

    # Metrics: counters from the app, requests from the delivery hook, gauges from the tables.
    def delivered(text: str) -> bool:
        m = samples(text)
        lag = {dict(labels)["topic"]: v for (name, labels), v in m.items() if name == "cs_relay_consumer_lag_records"}
        return (
            m.get(("cs_relay_delivered_total", (("destination", "customersuccessbox"), ("status", "200")))) == 3
            and lag.keys() == {pipeline.input_topic, f"{pipeline.name}-by-user"}
            and not any(lag.values())
        )

    text = await pipeline.eventually(
        lambda: http(worker, "/metrics"), lambda a: a[0] == 200 and delivered(a[2]), what="metrics after delivery"
    )
    assert text[1]["Content-Type"].startswith("text/plain")
    m = samples(text[2])
    assert m[("cs_relay_events_in_total", (("type", "track"),))] == 2
    assert m[("cs_relay_events_in_total", (("type", "group"),))] == 1
    assert m[("cs_relay_delivered_total", (("destination", "clientsuccess"), ("status", "200")))] == 1
    assert m[("cs_relay_pending_events", (("destination", "clientsuccess"), ("state", "held")))] == 1
    assert m[("cs_relay_held_total", (("destination", "customersuccessbox"),))] == 1
    assert m[("cs_relay_partner_request_seconds_count", (("destination", "clientsuccess"),))] == 1
    assert m[("cs_relay_ready", ())] == 1
    assert m[("cs_relay_build_info", (("version", streams.__version__),))] == 1
    assert m[("process_resident_memory_bytes", ())] > 10_000_000  # the worker's own process
    assert m[("cs_relay_parked_oldest_age_seconds", (("destination", "clientsuccess"),))] == 0

    # The commands, in-process against the worker (stdout is not a terminal: plain JSON).
    base = url(worker, "")
    code, out, _ = await run_cli(capsys, "inspect", "user", "u1", "--url", base)
    record, note = out.split("\n\ngroup_copy: ")  # the record, then what its copy of the group is
    assert code == 0 and json.loads(record) == readable(user) and "\033[" not in out and out.count("\n") > 3
    assert note.startswith("this user's own copy of group 'acme'")
    code, out, _ = await run_cli(capsys, "inspect", "group", "acme", "--url", base, "--json")
    assert code == 0 and json.loads(out) == readable(group) and out.count("\n") == 1
    code, out, _ = await run_cli(capsys, "inspect", "pending", "u2", "--url", base)
    assert code == 0 and json.loads(out)["queues"].keys() == {"clientsuccess", "customersuccessbox"}
    code, _, err = await run_cli(capsys, "inspect", "user", "nobody", "--url", base)
    assert code == 1 and "404" in err and "nobody" in err
    code, out, _ = await run_cli(capsys, "status", "--url", base, "--json")
    doc = json.loads(out)
    assert doc["destinations"]["clientsuccess"] == {
        "name": "ClientSuccess",
        "delivered": 1,
        "retrying": 0,
        "pending": 1,
        "held": 1,
        "releasing": 0,
        "dead_lettered": 0,
        "skipped_for_consent": 0,
    }
    assert doc["destinations"]["customersuccessbox"]["delivered"] == 3
    assert doc["consumer_lag"]["total"] == 0 and doc["ready"] is True
    code, out, _ = await run_cli(capsys, "status", "--url", base)
    assert code == 0 and "ClientSuccess" in out and "dead-lettered" in out and "consumer lag: 0" in out
    code, _, err = await run_cli(capsys, "status", "--url", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach" in err


def users_in_each_partition(partitions: int) -> list[str]:
    """One user id per by-user partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        found.setdefault(owner_partition(f"user-{n}", partitions), f"user-{n}")
        n += 1
    return [found[p] for p in range(partitions)]


async def test_any_of_two_workers_answers_for_every_user(pipeline: Pipeline):
    """Each worker owns one of two partitions; asked either, both answer for both users.
    The second binds every address, as in a container, and advertises a host name; bound
    so, it needs the admin token (issue 16, item 8), which the workers share."""
    assert pipeline.partitions == 2
    users = users_in_each_partition(2)
    workers = [
        pipeline.start_worker(index=0, CS_RELAY_ADMIN_TOKEN=ADMIN_TOKEN),
        pipeline.start_worker(
            index=1,
            CS_RELAY_WEB_HOST="0.0.0.0",
            CS_RELAY_WEB_ADVERTISED_HOST="localhost",
            CS_RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
        ),
    ]
    await pipeline.send(*(seg("identify", u, i, traits={"name": u}) for i, u in enumerate(users)))
    for worker in workers:
        await wait_ready(pipeline, worker, partitions=1)

    served_by = {}
    for user in users:
        answers = []
        for worker in workers:
            status, headers, body = await pipeline.eventually(
                lambda worker=worker, user=user: http(worker, f"/users/{user}", token=ADMIN_TOKEN),
                lambda a: a[0] == 200,
                what=f"{user} from each worker",
            )
            answers.append((json.loads(body), headers["X-CS-Relay-Served-By"], headers["X-CS-Relay-Partition"]))
        assert answers[0] == answers[1], answers  # same state, same owner, whichever worker was asked
        state, served_by[user], partition = answers[0]
        assert state["traits"] == {"name": user} and partition == str(owner_partition(user, 2))
    # The two users live in different workers: one of the answers was forwarded.
    assert len(set(served_by.values())) == 2, served_by
    assert set(served_by.values()) == {
        f"http://127.0.0.1:{workers[0].web_port}",
        f"http://localhost:{workers[1].web_port}",
    }

    # The console's user page, asked of either worker, shows both users: a page for a user
    # of the other worker is forwarded with the admin token and the session id, not the
    # browser's cookie (issue 22, finding 10), and the owner accepts that.
    for worker in workers:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(url(worker, "/console/login"), data={"token": ADMIN_TOKEN}) as response:
                assert response.status == 200, await response.text()  # the redirect to /console, followed
            for user in users:
                async with browser.get(url(worker, f"/console/users/{user}")) as response:
                    body = await response.text()
                    assert response.status == 200 and f"User {user}" in body, body[:2000]
                    assert 'name="csrf"' in body


async def test_endpoints_need_the_token_and_no_secret_leaks(pipeline: Pipeline):
    worker = pipeline.start_worker(
        CS_RELAY_ADMIN_TOKEN=ADMIN_TOKEN, CS_RELAY_WRITE_KEYS=WRITE_KEY, CS_RELAY_LOG_FORMAT="json"
    )
    async with aiohttp.ClientSession() as session:
        for base, status in (
            # 400, not 401: a 401 now pauses the destination and parks (issue 16), where a
            # 400 is still a final refusal whose dead letter must not hold a secret.
            (pipeline.mocks.urls["clientsuccess"], 400),
            (pipeline.mocks.urls["customersuccessbox"], 422),
        ):
            async with session.post(f"{base}/_mock/faults", json={"status": status, "count": 1}) as response:
                assert response.status < 300
    refused = seg("track", "u-sec", 2, event="Refused")
    await pipeline.send(
        seg("group", "u-sec", 1, groupId="acme", traits={"name": "Acme", "account_id": "acc-1"}), refused, refused
    )
    letters = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 2, what="two refused deliveries")
    assert sorted((h["cs-relay-destination"], h["cs-relay-status"]) for _, h in letters) == [
        ("clientsuccess", "400"),
        ("customersuccessbox", "422"),
    ]

    # Open: liveness and readiness. Everything else: the bearer token, or 401 JSON.
    await pipeline.eventually(lambda: http(worker, "/health"), lambda a: a[0] == 200, what="a live worker")
    await wait_ready(pipeline, worker)
    # /version needs no token either.
    status, version = await get_json(worker, "/version")
    assert status == 200 and version == {
        "version": streams.__version__,
        "python": platform.python_version(),
        "faust": importlib.metadata.version("faust-streaming"),
        "event_loop": "uvloop",
    }
    bodies = []
    for path in ("/users/u-sec", "/groups/acme", "/pending/u-sec", "/status", "/metrics"):
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0000000"},
            {"Authorization": f"Basic {ADMIN_TOKEN}"},
            {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        ):
            status, response_headers, body = await http(worker, path, **headers)
            assert status == 401 and json.loads(body)["error"] == "unauthorized", (path, headers, body)
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
            bodies.append(body)
        status, _, body = await http(worker, path, token=ADMIN_TOKEN)
        assert status == 200, (path, body)
    # An error about a key that happens to be a secret does not repeat it.
    secrets = [ADMIN_TOKEN, WRITE_KEY, DEMO_CREDENTIALS["CLIENTSUCCESS_API_KEY"], DEMO_CREDENTIALS["CSB_API_KEY"]]
    for secret in secrets:
        status, _, body = await http(worker, f"/users/{secret}", token=ADMIN_TOKEN)
        assert status == 404 and json.loads(body)["error"] == "not_found"
        bodies.append(body)

    metrics = samples((await http(worker, "/metrics", token=ADMIN_TOKEN))[2])
    assert metrics[("cs_relay_delivery_failed_total", (("destination", "clientsuccess"), ("status", "400")))] == 1
    assert (
        metrics[
            (
                "cs_relay_dead_lettered_total",
                (("destination", "customersuccessbox"), ("reason", "partner_refused"), ("stage", "delivery")),
            )
        ]
        == 1
    )

    worker.terminate()
    log = worker.log.read_text(errors="replace")
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]  # JSON lines only: no banner
    dead = [line for line in lines if line["message"].startswith("dead letter (delivery")]
    assert sorted(line["message_id"] for line in dead) == ["group-u-sec-1", "track-u-sec-2"]
    duplicate = [line for line in lines if line["message"].startswith("duplicate messageId")]
    assert [line.get("message_id") for line in duplicate] == ["track-u-sec-2"]  # from Faust's current event
    assert any("cs-relay settings" in line["message"] for line in lines)
    texts = [log, *bodies] + [value.decode("utf-8", "replace") + json.dumps(headers) for value, headers in letters]
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret appears in: {text[:2000]}"
