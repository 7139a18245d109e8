"""The pure parts of inspection, metrics, structured logs and the admin commands:
settings, auth, routing, metric families, status, log lines, JSON rendering."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import re

import pytest
from aiohttp import web
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

import streams
from streams.cli import inspection as admincli
from streams.core.decision import PartnerRequest
from streams.core.pendingcounts import pending_counts
from streams.destinations.base import Credentials
from streams.ops.admin import authorized, changelog_remaining, owner_url, same_worker
from streams.ops.logs import (
    JsonFormatter,
    RedactingStreamHandler,
    bind_event_id,
    bind_event_raw,
    logging_config,
    message_id_of,
)
from streams.ops.observe import Snapshot, Stats, consumer_lag, render_metrics, status_document
from streams.ops.webserve import client_url, serve
from streams.partitioner import owner_partition
from streams.runtime.delivery import Outcome, PartnerClient
from streams.settings import Settings, SettingsError
from streams.testing.mocks import DEMO_CREDENTIALS

TOKEN = "an-admin-token-of-32-characters!"


# ------------------------------------------------------------------ settings


def test_admin_token_and_log_format_settings():
    s = Settings.from_env({"CS_RELAY_ADMIN_TOKEN": TOKEN, "CS_RELAY_LOG_FORMAT": "JSON"})
    assert s.admin_token.reveal() == TOKEN and s.log_format == "json"
    assert TOKEN in s.secrets() and TOKEN not in json.dumps(s.redacted()) and TOKEN not in repr(s)
    defaults = Settings.from_env({})
    assert not defaults.admin_token and defaults.log_format == "text" and defaults.web_host == "127.0.0.1"


@pytest.mark.parametrize(
    "name,value",
    [
        ("CS_RELAY_ADMIN_TOKEN", "short-token"),
        ("CS_RELAY_ADMIN_TOKEN", "has a space in the middle!"),
        ("CS_RELAY_LOG_FORMAT", "xml"),
    ],
)
def test_bad_admin_settings_name_the_variable_and_never_the_token(name, value):
    with pytest.raises(SettingsError, match=name) as info:
        Settings.from_env({name: value})
    if name == "CS_RELAY_ADMIN_TOKEN":
        assert value not in str(info.value)


# ------------------------------------------------------------------ auth and routing


def test_bearer_token_check():
    assert authorized(None, "")  # no token configured: open
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer "):
        assert not authorized(header, TOKEN), header


def test_owner_partition_is_the_by_user_topics_and_not_faust_table_routes():
    keys = [f"user-{n}" for n in range(200)] + ["anon-7", "ümlaut@example.com", "1234"]
    for partitions in (1, 2, 8):
        for key in keys:
            expected = DefaultPartitioner()(key.encode("utf-8"), list(range(partitions)), list(range(partitions)))
            assert owner_partition(key, partitions) == expected
    # Faust's table_route hashes the table's serialized key, JSON: '"user-1"'. For many
    # keys that is another partition, hence the custom route.
    differ = [k for k in keys if owner_partition(k, 2) != owner_partition(json.dumps(k), 2)]
    assert len(differ) > len(keys) // 4


def test_owner_url_and_same_worker():
    metadata = {"http://a:6066": {"x-users-changelog": [0, 2]}, "http://b:6067": {"x-users-changelog": [1]}}
    assert owner_url(metadata, 2) == "http://a:6066" and owner_url(metadata, 1) == "http://b:6067"
    assert owner_url(metadata, 3) is None and owner_url({}, 0) is None
    assert same_worker("http://a:6066", "http://a:6066/") and not same_worker("http://a:6066", "http://a:6067")


def test_changelog_remaining_is_what_recovery_still_has_to_read():
    from collections import Counter

    highwaters = Counter({"a": 99, "b": 9, "empty": -1, "unknown": None, "done": 40, "not_started": 4})
    offsets = Counter({"a": 49, "b": -1, "empty": -1, "unknown": 3, "done": 40})
    # a: 50 to go; b: nothing read yet, offsets 0..9; an empty, unknown, done or
    # not yet tracked partition: nothing.
    assert changelog_remaining(highwaters, offsets) == 50 + 10
    assert changelog_remaining({"a": 10}, {"a": 12}) == 0
    assert changelog_remaining(Counter(), Counter()) == 0


# ------------------------------------------------------------------ metrics and status


def pending_record(**queues: dict) -> dict:
    return {"v": 1, "next_seq": 9, "queues": queues}


def item(seq: int) -> dict:
    return {"seq": seq, "held_at": 1.0, "raw": "{}", "source": {}}


def parked(seq: int) -> dict:
    return {
        "seq": seq,
        "raw": "{}",
        "source": {},
        "request": {"method": "POST", "path": "/x", "json": {}},
        "message_id": f"m{seq}",
        "first_failed_at": 1.0,
        "attempts": 3,
        "next_at": 2.0,
    }


def test_pending_counts_and_consumer_lag():
    records = [
        pending_record(clientsuccess={"held": [item(1), item(2)], "releasing": [item(3)]}),
        pending_record(clientsuccess={"held": [item(4)]}, customersuccessbox={"parked": [parked(5)]}),
        None,
        {**pending_record(clientsuccess={"held": [item(6)]}), "v": 99},  # a newer worker's: left out
    ]
    assert pending_counts(records) == {
        "clientsuccess": {"held": 3, "releasing": 1, "parked": 0},
        "customersuccessbox": {"held": 0, "releasing": 0, "parked": 1},
    }
    ends = {("in", 0): 10, ("in", 1): 5, ("in", 2): None, ("in", 3): 7}
    positions = {("in", 0): 4, ("in", 1): 5, ("in", 2): 1}
    assert consumer_lag(ends, positions) == {("in", 0): 6, ("in", 1): 0}


def snapshot() -> Snapshot:
    stats = Stats()
    observe = stats.observer("clientsuccess")
    observe(503, 0.02, Outcome.RETRY, 1)
    observe(200, 0.2, Outcome.DONE, 2)
    observe(None, 5.0, Outcome.RETRY, 1)
    stats.observer("customersuccessbox")(422, 0.004, Outcome.FAIL, 1)
    stats.dead_letter("delivery", "partner_refused", "customersuccessbox")
    stats.dead_letter("intake", "invalid_json", None)
    return Snapshot(
        destinations={"clientsuccess": "ClientSuccess", "customersuccessbox": "CustomerSuccessBox"},
        counters={
            "in.track": 3,
            "in.group": 1,
            "held.clientsuccess": 2,
            "consent.clientsuccess": 4,
            "duplicates": 1,
            "done.clientsuccess": 1,
            "dead_lettered.intake.invalid_json": 1,
            "parked.clientsuccess": 1,
        },
        stats=stats,
        pending={"clientsuccess": {"held": 2, "releasing": 0, "parked": 1}},
        lag={("in", 0): 3, ("by-user", 1): 0},
        unacknowledged=4,
        ready=True,
        parked_oldest_age={"clientsuccess": 42.5},
    )


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_text():
    m = samples(render_metrics(snapshot()).decode())
    assert m[("cs_relay_events_in_total", (("type", "track"),))] == 3
    assert m[("cs_relay_held_total", (("destination", "clientsuccess"),))] == 2
    assert m[("cs_relay_duplicates_total", ())] == 1 and m[("cs_relay_anonymous_merged_total", ())] == 0
    assert m[("cs_relay_delivered_total", (("destination", "clientsuccess"), ("status", "200")))] == 1
    assert m[("cs_relay_retried_total", (("destination", "clientsuccess"), ("status", "503")))] == 1
    assert m[("cs_relay_retried_total", (("destination", "clientsuccess"), ("status", "error")))] == 1
    assert m[("cs_relay_delivery_failed_total", (("destination", "customersuccessbox"), ("status", "422")))] == 1
    assert (
        m[("cs_relay_dead_lettered_total", (("destination", ""), ("reason", "invalid_json"), ("stage", "intake")))] == 1
    )
    assert m[("cs_relay_pending_events", (("destination", "clientsuccess"), ("state", "parked")))] == 1
    assert m[("cs_relay_consumer_lag_records", (("partition", "0"), ("topic", "in")))] == 3
    assert not any(name == "cs_relay_consumer_lag" for name, _ in m)  # the old name, without its unit, is gone
    assert m[("cs_relay_unacknowledged_events", ())] == 4 and m[("cs_relay_ready", ())] == 1
    # The oldest parked delivery's age: every enabled destination, 0 when none is parked.
    assert m[("cs_relay_parked_oldest_age_seconds", (("destination", "clientsuccess"),))] == 42.5
    assert m[("cs_relay_parked_oldest_age_seconds", (("destination", "customersuccessbox"),))] == 0
    # Build and process metrics, from the worker's own registry.
    assert m[("cs_relay_build_info", (("version", streams.__version__),))] == 1
    assert m[("process_resident_memory_bytes", ())] > 1_000_000
    assert ("process_cpu_seconds_total", ()) in m
    assert any(name == "python_gc_collections_total" for name, _ in m)
    assert any(name == "python_info" for name, _ in m)
    # Unknown counters are not lost; those the hooks count better are not repeated.
    assert m[("cs_relay_app_events_total", (("counter", "parked.clientsuccess"),))] == 1
    assert m[("cs_relay_skipped_for_consent_total", (("destination", "clientsuccess"),))] == 4
    assert not any("done.clientsuccess" in str(key) or "dead_lettered.intake" in str(key) for key in m)
    # The latency histogram: every attempt, cumulative buckets.
    hist = {labels: v for (name, labels), v in m.items() if name == "cs_relay_partner_request_seconds_bucket"}
    assert hist[(("destination", "clientsuccess"), ("le", "0.025"))] == 1
    assert hist[(("destination", "clientsuccess"), ("le", "0.25"))] == 2
    assert hist[(("destination", "clientsuccess"), ("le", "+Inf"))] == 3
    assert m[("cs_relay_partner_request_seconds_count", (("destination", "clientsuccess"),))] == 3
    assert m[("cs_relay_partner_request_seconds_sum", (("destination", "clientsuccess"),))] == pytest.approx(5.22)


def test_status_document():
    doc = status_document(snapshot())
    assert doc["destinations"]["clientsuccess"] == {
        "name": "ClientSuccess",
        "delivered": 1,
        "retrying": 1,
        "pending": 2,
        "dead_lettered": 0,
        "held": 2,
        "releasing": 0,
        "skipped_for_consent": 4,
    }
    assert doc["destinations"]["customersuccessbox"]["dead_lettered"] == 1
    assert doc["destinations"]["customersuccessbox"]["skipped_for_consent"] == 0
    assert doc["dead_lettered_without_destination"] == 1
    assert doc["events_in"] == {"group": 1, "track": 3}
    assert doc["consumer_lag"] == {
        "total": 3,
        "partitions": [{"topic": "by-user", "partition": 1, "lag": 0}, {"topic": "in", "partition": 0, "lag": 3}],
    }
    table = admincli.status_table({"worker": "http://127.0.0.1:6066", **doc})
    assert "http://127.0.0.1:6066 (ready)" in table and "dead-lettered" in table
    row = next(line for line in table.splitlines() if line.startswith("ClientSuccess "))
    assert row.split()[1:] == ["1", "1", "2", "0"]
    assert "consumer lag: 3 (by-user/1: 0, in/0: 3)" in table


async def test_partner_client_reports_every_attempt_to_the_hook(partner_mocks):
    client = PartnerClient(
        "ClientSuccess",
        partner_mocks.url("clientsuccess"),
        max_retries=2,
        backoff_base=0.001,
        credentials=Credentials(query={"api_key": DEMO_CREDENTIALS["CLIENTSUCCESS_API_KEY"]}),
    )
    seen = []
    client.on_attempt = lambda status, seconds, outcome, attempt: seen.append((status, outcome, attempt, seconds >= 0))
    partner_mocks.fault("clientsuccess", status=503, count=1)
    try:
        request = PartnerRequest(
            "POST",
            "/collector/1.0.0/projects/demo-source/events/Built",
            {"identity": {"organization": {"id": "o", "name": "O"}, "user": {"id": "u"}}, "value": 1},
        )
        result = await client.send(request)
    finally:
        await client.close()
    assert result.outcome is Outcome.DONE
    assert seen == [(503, Outcome.RETRY, 1, True), (200, Outcome.DONE, 2, True)]


# ------------------------------------------------------------------ log lines


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("cs_relay", logging.WARNING, __file__, 1, msg, args, exc_info)


def raised(message: str) -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


def test_json_lines_carry_the_event_id_and_no_secret():
    async def scenario() -> list[dict]:
        formatter = JsonFormatter(secrets=[TOKEN])
        lines = [json.loads(formatter.format(record("no event here")))]

        async def delivery() -> None:  # a task of its own, as cs-relay's deliveries are
            bind_event_id("msg-42")
            lines.append(json.loads(formatter.format(record("refused: %s", f"token {TOKEN}", exc=raised(TOKEN)))))

        await asyncio.create_task(delivery())
        lines.append(json.loads(formatter.format(record("after the task"))))
        return lines

    outside, inside, after = asyncio.run(scenario())
    assert "message_id" not in outside and "message_id" not in after  # the binding stayed in its task
    assert inside["message_id"] == "msg-42" and inside["level"] == "warning" and inside["logger"] == "cs_relay"
    assert inside["message"] == "refused: token ***"
    assert "RuntimeError: ***" in inside["error"] and TOKEN not in json.dumps(inside)


def test_event_ids_from_raw_records():
    assert message_id_of(b'{"messageId": "m-1", "type": "track"}') == "m-1"
    assert message_id_of('{"properties": {"messageId": "inner"}}') is None
    for raw in (b"\xff not json", b"[1]", b"", None, b'{"messageId": 7}'):
        assert message_id_of(raw) is None


def test_text_handler_masks_the_whole_line_traceback_included():
    out = io.StringIO()
    handler = RedactingStreamHandler(out, secrets=[TOKEN])
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.handle(record("calling with %s", TOKEN, exc=raised(f"bad key {TOKEN}")))
    handler.handle(record("GET /x?api_key=abc123 Authorization: Bearer xyz"))
    text = out.getvalue()
    assert TOKEN not in text and "RuntimeError: bad key ***" in text and "calling with ***" in text
    assert "abc123" not in text and "xyz" not in text


def test_logging_config_is_a_valid_dict_config():
    config = logging_config(level="info", log_format="json", secrets=[TOKEN])
    assert config.pop("merge") is True and config["handlers"]["default"]["formatter"] == "cs_relay_json"
    out = io.StringIO()
    handler = {**config["handlers"]["default"], "stream": out}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": config["formatters"],
            "handlers": {"cs_relay_test": handler},
            "loggers": {"cs_relay_test": {"handlers": ["cs_relay_test"], "level": "INFO", "propagate": False}},
        }
    )
    logger = logging.getLogger("cs_relay_test")
    try:
        bind_event_raw(b'{"messageId": "m-7"}')
        logger.info("key %s", TOKEN)
        logger.debug("below the level")
    finally:
        bind_event_id(None)
        for h in list(logger.handlers):
            logger.removeHandler(h)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{**lines[0], "message": "key ***", "message_id": "m-7", "level": "info"}]
    assert text_format_default() == "colored"


def text_format_default() -> str:
    return logging_config(level="info", log_format="text", secrets=[])["handlers"]["default"]["formatter"]


# ------------------------------------------------------------------ the commands


def test_json_rendering():
    value = {"key": "u1", "traits": {"n": 1, "ok": True, "none": None, "list": ["a", 2.5], "empty": {}}, "ids": []}
    plain = admincli.render(value, color=False)
    assert plain == json.dumps(value, indent=2)
    colored = admincli.render(value, color=True)
    assert "\033[" in colored and re.sub(r"\033\[[0-9;]*m", "", colored) == plain
    assert admincli.render(value, color=True, compact=True) == json.dumps(value, separators=(",", ":"))


def test_default_worker_url():
    assert client_url("127.0.0.1", 6066) == "http://127.0.0.1:6066"
    assert client_url("0.0.0.0", 1) == "http://127.0.0.1:1" and client_url("::", 2) == "http://[::1]:2"
    assert client_url("fe80::1", 3) == "http://[fe80::1]:3" and client_url("worker-2", 4) == "http://worker-2:4"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_inspect_against_a_worker_like_server(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    seen_auth = []

    async def user(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization"))
        if request.match_info["id"] == "a/b c":
            return web.json_response({"key": "a/b c"})
        return web.json_response({"error": "not_found", "detail": "no user"}, status=404)

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    runner, port = await serve(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        out, err = Tty(), io.StringIO()
        code = await asyncio.to_thread(
            admincli.inspect, "user", "a/b c", url=base, token=TOKEN, compact=False, out=out, err=err
        )
        assert code == 0 and "\033[" in out.getvalue() and seen_auth == [f"Bearer {TOKEN}"]
        out = Tty()
        code = await asyncio.to_thread(
            admincli.inspect, "user", "a/b c", url=base, token="", compact=True, out=out, err=err
        )
        assert code == 0 and out.getvalue() == '{"key":"a/b c"}\n' and seen_auth[-1] is None
        code = await asyncio.to_thread(
            admincli.inspect, "user", "x", url=base, token="", compact=False, out=out, err=err
        )
        assert code == 1 and "404" in err.getvalue() and "no user" in err.getvalue()
    finally:
        await runner.cleanup()
    err = io.StringIO()
    code = await asyncio.to_thread(admincli.status, url=base, token="", as_json=True, out=io.StringIO(), err=err)
    assert code == 2 and "cannot reach the worker" in err.getvalue()


def test_circuit_breakers_in_metrics_and_status():
    """Each enabled destination's circuit state (streams/core/breaker.py) as a gauge and
    in /status: 0 closed, 1 half-open, 2 open, 3 paused (its credentials refused)."""
    base = snapshot()
    circuits = {"customersuccessbox": {"state": "paused", "since_seconds": 61.0, "next_probe_in_seconds": 4.0}}
    snap = Snapshot(**{**base.__dict__, "circuits": circuits})
    m = samples(render_metrics(snap).decode())
    assert m[("cs_relay_circuit_state", (("destination", "clientsuccess"),))] == 0
    assert m[("cs_relay_circuit_state", (("destination", "customersuccessbox"),))] == 3
    assert m[("cs_relay_destination_paused", (("destination", "customersuccessbox"),))] == 1
    assert m[("cs_relay_destination_paused", (("destination", "clientsuccess"),))] == 0
    doc = status_document(snap)
    assert doc["circuits"] == {
        "clientsuccess": {"state": "closed"},
        "customersuccessbox": circuits["customersuccessbox"],
    }


# ------------------------------------------------------------------ readiness


def test_ready_answers_not_ready_with_the_reason_once_work_failed_for_good():
    """A worker whose work failed for good is stopping (streams.runtime.runtime.
    Runtime.failed_for_good): /ready must not say all is well meanwhile."""
    from types import SimpleNamespace

    from streams.ops.admin import Admin

    recovery = SimpleNamespace(
        completed=asyncio.Event(),
        in_recovery=False,
        active_highwaters={},
        active_offsets={},
        standby_highwaters={},
        standby_offsets={},
    )
    recovery.completed.set()
    app = SimpleNamespace(
        _consumer=object(),
        tables=SimpleNamespace(recovery=recovery),
        rebalancing=False,
        assignor=SimpleNamespace(assigned_actives=lambda: []),
        conf=SimpleNamespace(canonical_url="http://worker:6066"),
    )
    failure: list[str] = []
    admin = Admin.__new__(Admin)  # the readiness part alone: no web server, no metrics registry
    admin.app, admin.source_topics = app, ("in",)
    admin.failure = lambda: failure[0] if failure else None
    ready, details = admin.readiness()
    assert ready and "failed" not in details
    failure.append("work for an event of ('in', 0) failed for good: RuntimeError: refused")
    ready, details = admin.readiness()
    assert not ready and details["failed"].startswith("work for an event")


# ------------------------------------------------------------------ forwarding to peers (issue 22, finding 10)


class _View:
    """The two answers of a Faust view that `Admin.forward` uses."""

    def bytes(self, body: bytes, *, content_type: str, status: int, headers: dict) -> web.Response:
        return web.Response(body=body, content_type=content_type, status=status, headers=headers)

    def json(self, body: object, *, status: int, headers: dict) -> web.Response:
        return web.json_response(body, status=status, headers=headers)


@pytest.mark.parametrize("token", [TOKEN, ""])
async def test_a_peer_is_reached_with_the_admin_token_never_the_browsers_cookie(token):
    """A request forwarded to the worker that owns a key carries this worker's own
    admin token (none without one) and what the caller of `forward` adds, and none of
    the browser's headers: not its cookie (the console's session), not its
    Authorization, nothing else."""
    from types import SimpleNamespace

    import aiohttp
    from aiohttp.test_utils import make_mocked_request

    from streams.ops.admin import ROUTED_HEADER, Admin

    seen: list[dict[str, str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"path": request.path_qs}, headers={"X-CS-Relay-Served-By": "peer"})

    peer = web.Application()
    peer.router.add_get("/{tail:.*}", page)
    runner, port = await serve(peer, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http_client:
            admin = Admin.__new__(Admin)  # the forwarding part alone
            admin.app = SimpleNamespace(http_client=http_client)
            admin.settings = Settings.from_env({"CS_RELAY_ADMIN_TOKEN": token} if token else {})
            request = make_mocked_request(
                "GET",
                "/console/users/u%202?q=1",
                headers={
                    "Cookie": "cs_relay_console=payload.signature",
                    "Authorization": "Bearer the-browsers-own-header",
                    "X-Something": "from the browser",
                },
            )
            response = await admin.forward(
                _View(), request, f"http://127.0.0.1:{port}", {"X-CS-Relay-Console-Session": "sid-1"}
            )
    finally:
        await runner.cleanup()
    assert response.status == 200 and json.loads(response.body) == {"path": "/console/users/u%202?q=1"}
    assert response.headers["X-CS-Relay-Served-By"] == "peer"
    (headers,) = seen
    assert "Cookie" not in headers and "X-Something" not in headers
    assert headers.get("Authorization") == (f"Bearer {token}" if token else None)
    assert headers[ROUTED_HEADER] == "1" and headers["X-CS-Relay-Console-Session"] == "sid-1"


# ------------------------------------------------------------------ the Host allow-list (issue 22, finding 10)


def test_a_worker_on_loopback_answers_only_to_its_own_names():
    """Against DNS rebinding: a page from another site, whose name now resolves to
    127.0.0.1, reaches the worker with its own name in Host. The worker answers only to
    its bind address, localhost, loopback addresses, its advertised host and the names
    in CS_RELAY_WEB_ALLOWED_HOSTS."""
    from streams.ops.hostcheck import allowed_hosts, host_allowed

    allowed = allowed_hosts(Settings.from_env({}))
    assert allowed is not None
    for host in ("127.0.0.1:6066", "127.0.0.1", "localhost:6066", "LocalHost.", "[::1]:6066", "127.0.0.2:1", None):
        assert host_allowed(host, allowed), host
    refused = (
        "rebind.attacker.example:6066",
        "rebind.attacker.example",
        "localhost.attacker.example",
        "",
        "10.0.0.1",
        "rebind.attacker.example@127.0.0.1",
        "127.0.0.1/x",
        "127.0.0.1:x",
        "[::1",
        "local host",
    )
    for host in refused:
        assert not host_allowed(host, allowed), host

    configured = Settings.from_env(
        {"CS_RELAY_WEB_ALLOWED_HOSTS": "Relay.Internal, 10.1.2.3", "CS_RELAY_WEB_ADVERTISED_HOST": "worker-3"}
    )
    assert configured.web_allowed_hosts == ("relay.internal", "10.1.2.3")
    allowed = allowed_hosts(configured)
    for host in ("relay.internal:6066", "10.1.2.3", "worker-3:6066", "localhost"):
        assert host_allowed(host, allowed), host
    assert not host_allowed("rebind.attacker.example", allowed)

    # Bound to every address (a container; the admin token is then required), the names
    # that reach it are not known: checked only when CS_RELAY_WEB_ALLOWED_HOSTS lists them.
    wide = {"CS_RELAY_WEB_HOST": "0.0.0.0", "CS_RELAY_ADMIN_TOKEN": TOKEN, "CS_RELAY_WEB_ADVERTISED_HOST": "worker-1"}
    assert allowed_hosts(Settings.from_env(wide)) is None
    listed = allowed_hosts(Settings.from_env({**wide, "CS_RELAY_WEB_ALLOWED_HOSTS": "relay.example.com"}))
    assert host_allowed("relay.example.com:443", listed) and host_allowed("worker-1:6066", listed)
    assert not host_allowed("rebind.attacker.example", listed)


@pytest.mark.parametrize("value", ["http://relay.internal", "relay.internal:6066", "relay internal", "a,,b", "relay/x"])
def test_bad_allowed_hosts_name_the_variable(value):
    with pytest.raises(SettingsError, match="CS_RELAY_WEB_ALLOWED_HOSTS"):
        Settings.from_env({"CS_RELAY_WEB_ALLOWED_HOSTS": value})


async def test_the_host_guard_refuses_another_host_before_any_handler():
    from aiohttp.test_utils import TestClient, TestServer

    from streams.ops.hostcheck import allowed_hosts, host_guard

    served: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        served.append(request.host)
        return web.json_response({"traits": {"email": "ada@example.com"}})

    app = web.Application(middlewares=[host_guard(allowed_hosts(Settings.from_env({})))])
    app.router.add_get("/users/{id}", secret)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        refused = await client.get("/users/u1", headers={"Host": "rebind.attacker.example:6066"})
        body = await refused.text()
        assert refused.status == 403 and "ada@" not in body and "CS_RELAY_WEB_ALLOWED_HOSTS" in body
        assert served == []
        ok = await client.get("/users/u1", headers={"Host": f"localhost:{client.port}"})
        assert ok.status == 200 and len(served) == 1
