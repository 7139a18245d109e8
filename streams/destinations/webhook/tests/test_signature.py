"""`X-Signature` as Segment's Webhooks destination computes it, over the exact bytes the
delivery client sends, and the operator's extra headers."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp.test_utils import TestServer

from streams import __version__
from streams.core.decision import Send
from streams.core.retry import Outcome
from streams.core.state import UserState
from streams.destinations.webhook import PLUGIN, credentials, mapping, signature
from streams.destinations.webhook.mock import create_app
from streams.destinations.webhook.settings import WebhookSettings
from streams.envreader import EnvReader
from streams.runtime.delivery import PartnerClient, Result
from streams.testing.recorder import RECORDS_KEY
from tests.factories import json_bytes, msg

SECRET = "demo-webhook-secret"


def test_sign_is_the_hex_hmac_sha1_of_the_body():
    # RFC 2104 style reference value, computed independently of hashlib here.
    assert signature.sign("key", b"The quick brown fox jumps over the lazy dog") == (
        "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
    )
    body = '{"type":"track","event":"Café ☕"}'.encode()
    assert signature.sign(SECRET, body) == hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()


def test_verify_accepts_only_the_right_signature():
    body = b'{"type":"identify"}'
    good = signature.sign(SECRET, body)
    assert signature.verify(SECRET, body, good)
    assert signature.verify(SECRET, body, good.upper())  # hex is hex
    assert not signature.verify(SECRET, body + b" ", good)
    assert not signature.verify("other", body, good)
    assert not signature.verify(SECRET, body, None)
    assert not signature.verify(SECRET, body, "")
    assert not signature.verify(SECRET, body, "zz-not-hex-é")


def read(env: dict[str, str]) -> WebhookSettings:
    return PLUGIN.read_settings(EnvReader({"WEBHOOK_URL": "http://127.0.0.1:1/hook", **env}))


def test_credentials_sign_the_exact_bytes_given_and_add_the_extra_headers():
    own = read({"WEBHOOK_SHARED_SECRET": SECRET, "WEBHOOK_HEADERS": '{"Authorization": "Bearer t", "X-Tenant": "t1"}'})
    body = b'{"type":"track"}'
    attached = credentials(own)
    assert attached.headers_for(body) == {
        "Authorization": "Bearer t",
        "X-Tenant": "t1",
        "X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
    }
    assert dict(attached.headers) == {"Authorization": "Bearer t", "X-Tenant": "t1"}  # the same for every body
    assert dict(attached.query) == {}
    # the signature follows the bytes
    assert attached.headers_for(body + b"\n")["X-Signature"] != attached.headers_for(body)["X-Signature"]
    assert PLUGIN.credentials is credentials
    assert SECRET not in repr(attached) and "Bearer t" not in repr(attached)


def test_without_a_shared_secret_there_is_no_signature():
    attached = credentials(read({"WEBHOOK_HEADERS": '{"X-Tenant": "t1"}'}))
    assert attached.headers_for(b"{}") == {"X-Tenant": "t1"} and attached.sign is None
    assert credentials(read({})).headers_for(b"{}") == {}


async def _deliver(own: WebhookSettings, mock_secret: str, message) -> tuple[Result, list[dict[str, Any]]]:
    """One message through the mapping and the real delivery client to the mock."""
    server = TestServer(create_app(mock_secret))
    await server.start_server()
    client = PartnerClient(
        "Webhooks",
        str(server.make_url("/webhook")),
        credentials=credentials(own),
        max_retries=0,
    )
    try:
        decision = mapping.decide(own, message, UserState("u1", user_id="u1"), lambda group_id: None)
        assert isinstance(decision, Send), decision
        result = await client.send(decision.request)
        return result, server.app[RECORDS_KEY].copy()
    finally:
        await client.close()
        await server.close()


async def test_the_delivery_clients_bytes_verify_at_a_receiver_written_for_segment():
    own = read({"WEBHOOK_SHARED_SECRET": SECRET})
    message = msg("track", event="Café ☕ \u2028 ordered", properties={"price": 1.10, "tags": ["ä", None]})
    result, records = await _deliver(own, SECRET, message)
    assert (result.outcome, result.status) == (Outcome.DONE, 200)
    [record] = records
    assert record["path"] == "/webhook" and record["method"] == "POST"
    assert record["json"] == json.loads(json_bytes(message))
    headers = record["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"cs-relay/{__version__}"
    # what was signed is what was sent: the compact UTF-8 JSON of the body
    sent = json.dumps(record["json"], separators=(",", ":"), ensure_ascii=False).encode()
    assert headers["X-Signature"] == hmac.new(SECRET.encode(), sent, hashlib.sha1).hexdigest()


async def test_a_worker_with_the_wrong_secret_is_refused_for_good():
    own = read({"WEBHOOK_SHARED_SECRET": "not-the-receivers-secret"})
    result, records = await _deliver(own, SECRET, msg("identify", traits={"a": 1}))
    assert (result.outcome, result.status) == (Outcome.FAIL, 401)
    assert [r["status"] for r in records] == [401]


async def test_an_unsigned_worker_is_refused_by_a_receiver_with_a_secret():
    result, _ = await _deliver(read({}), SECRET, msg("identify"))
    assert (result.outcome, result.status) == (Outcome.FAIL, 401)
