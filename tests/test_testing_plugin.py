"""The pytest plugin's fixtures (streams/testing/plugin.py) as a team's tests use them:
`partner_mocks` from synchronous code, its reset between tests, its faults, and the
opt-in `relay_pipeline` through the real broker. tests/test_installed_plugin.py runs
them from an installed cs-relay, outside the checkout."""

from __future__ import annotations

import ast
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.destinations import REGISTRY
from streams.testing.partners import PartnerMocks
from streams.testing.pipeline import Pipeline
from streams.testing.recorder import FaultError

STREAMS = Path(__file__).resolve().parent.parent / "streams"
CS_BODY = {"identity": {"organization": {"id": "acme", "name": "Acme"}, "user": {"id": "u1"}}, "value": 2}


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def cs_url(mocks: PartnerMocks, event: str = "Signed%20Up") -> str:
    creds = mocks.credentials
    project = creds["CLIENTSUCCESS_SOURCE_ID"]
    return (
        f"{mocks.url('cs')}/collector/1.0.0/projects/{project}/events/{event}?api_key={creds['CLIENTSUCCESS_API_KEY']}"
    )


def test_every_registered_destination_has_a_mock_on_its_own_port(partner_mocks: PartnerMocks) -> None:
    assert sorted(partner_mocks.urls) == sorted(p.key for p in REGISTRY)
    assert len(set(partner_mocks.urls.values())) == len(REGISTRY)
    assert all(url.startswith("http://127.0.0.1:") and not url.endswith(":0") for url in partner_mocks.urls.values())
    assert partner_mocks.url("ClientSuccess") == partner_mocks.url("clientsuccess") == partner_mocks.url("cs")
    with pytest.raises(KeyError, match="the destinations are clientsuccess"):
        partner_mocks.url("segment")


def test_a_request_from_synchronous_code_is_recorded_with_its_key_redacted(partner_mocks: PartnerMocks) -> None:
    assert post(cs_url(partner_mocks), CS_BODY) == 200
    [request] = partner_mocks.requests("clientsuccess")
    assert (request["method"], request["status"], request["json"]) == ("POST", 200, CS_BODY)
    assert request["query"] == {"api_key": "***"}
    assert partner_mocks.state("clientsuccess")["organizations"]["acme"]["name"] == "Acme"
    partner_mocks.fault("webhook", status=500)  # left for the next test to not see


def test_the_next_test_sees_no_request_state_or_fault_of_the_one_before(partner_mocks: PartnerMocks) -> None:
    """Runs after the test above (pytest keeps a module's order), which left all three."""
    assert [partner_mocks.requests(key) for key in partner_mocks.urls] == [[], [], []]
    assert partner_mocks.state("clientsuccess") == {"organizations": {}}
    assert post(partner_mocks.url("webhook") + "/webhook", {"type": "track", "event": "E"}) != 500


def test_faults_answer_until_used_up_or_cleared(partner_mocks: PartnerMocks) -> None:
    fault = partner_mocks.fault("cs", status=429, count=2, retry_after=1)
    assert (fault["status"], fault["remaining"]) == (429, 2)
    assert [post(cs_url(partner_mocks), CS_BODY) for _ in range(3)] == [429, 429, 200]
    partner_mocks.fault("cs", status=503)
    assert post(cs_url(partner_mocks), CS_BODY) == 503
    partner_mocks.clear_faults()
    assert post(cs_url(partner_mocks), CS_BODY) == 200
    with pytest.raises(FaultError, match="status must be"):
        partner_mocks.fault("cs", status=99)


def test_credentials_other_than_the_demo_ones() -> None:
    with PartnerMocks({"CLIENTSUCCESS_API_KEY": "team-key"}) as mocks:
        assert mocks.credentials["CLIENTSUCCESS_API_KEY"] == "team-key"
        assert mocks.worker_env()["CLIENTSUCCESS_API_KEY"] == "team-key"
        assert post(cs_url(mocks), CS_BODY) == 200
        url = cs_url(mocks).replace("team-key", "demo-cs-api-key")
        assert post(url, CS_BODY) == 401
    with pytest.raises(OSError):
        post(cs_url(mocks), CS_BODY)  # closed: nothing listens there any more


@pytest.mark.e2e
async def test_relay_pipeline_delivers_a_teams_segment_calls(
    relay_pipeline: Pipeline, partner_mocks: PartnerMocks
) -> None:
    await relay_pipeline.send(
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}, "messageId": "m1"},
        {"type": "track", "userId": "u1", "event": "Signed Up", "properties": {"value": 2}, "messageId": "m2"},
    )
    [request] = await relay_pipeline.eventually(
        relay_pipeline.cs_requests, lambda r: len(r) >= 1, what="the ClientSuccess event"
    )
    assert request["path"] == "/collector/1.0.0/projects/demo-source/events/Signed Up"
    assert request["json"]["identity"] == CS_BODY["identity"] and request["json"]["value"] == 2
    assert partner_mocks.requests("clientsuccess") == [request]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("folder", ["destinations", "testing", "localkafka"])
def test_the_installed_code_imports_nothing_from_outside_streams(folder: str) -> None:
    """Nothing under these folders (their tests aside) imports the checkout's other
    top-level packages, which an installed cs-relay does not carry."""
    outside = {"mockservers", "devtools", "tests", "bench", "tools"}
    offending = {
        str(path.relative_to(STREAMS)): sorted(imported_roots(path) & outside)
        for path in (STREAMS / folder).rglob("*.py")
        if "tests" not in path.relative_to(STREAMS).parts and imported_roots(path) & outside
    }
    assert offending == {}
