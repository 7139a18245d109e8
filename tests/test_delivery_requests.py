"""What `PartnerClient` puts on the wire (issue 23: request URLs and headers built once per
destination): each request's URL is its path under the base URL with the credentials'
query, its own query kept and never able to override a credential; the fixed headers and
the signed ones reach the partner; no key shows in a repr."""

from __future__ import annotations

import hashlib
import hmac
import json

from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from streams.core.decision import PartnerRequest
from streams.core.retry import Outcome
from streams.destinations.base import Credentials
from streams.runtime.delivery import BODY_JSON, MAX_URLS, PartnerClient, RequestURLs

KEY = "k-3f9a-secret"


async def serve() -> tuple[TestServer, list[web.Request]]:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    return server, seen


def sign(body: bytes) -> dict[str, str]:
    return {"X-Signature": hmac.new(b"s", body, hashlib.sha1).hexdigest()}


async def test_each_request_carries_its_path_query_and_the_fixed_and_signed_credentials():
    server, seen = await serve()
    credentials = Credentials(headers={"Authorization": f"Bearer {KEY}"}, query={"api_key": KEY}, sign=sign)
    client = PartnerClient("Partner", str(server.make_url("/base/")), credentials=credentials, max_retries=0)
    requests = [
        PartnerRequest("POST", "/events/Signed%20Up", {"n": 1}),
        PartnerRequest("POST", "/events/Signed%20Up", {"n": 2}),  # the same path: its URL is kept
        PartnerRequest("POST", "/events/Other", {"n": 3}, {"window": "w1", "api_key": "not-the-key"}),
    ]
    try:
        results = [await client.send(request) for request in requests]
    finally:
        await client.close()
        await server.close()
    assert [(r.outcome, r.status) for r in results] == [(Outcome.DONE, 200)] * 3
    paths = [r.raw_path.partition("?")[0] for r in seen]
    assert paths == ["/base/events/Signed%20Up", "/base/events/Signed%20Up", "/base/events/Other"]
    assert [dict(r.query) for r in seen] == [{"api_key": KEY}, {"api_key": KEY}, {"window": "w1", "api_key": KEY}]
    for request in seen:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"].startswith("cs-relay/")
    bodies = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert [r.headers["X-Signature"] for r in seen] == [sign(body)["X-Signature"] for body in bodies]
    assert KEY not in repr(credentials) and KEY not in repr(client._urls)


async def test_a_base_url_with_its_own_query_keeps_it():
    server, seen = await serve()
    client = PartnerClient(
        "Partner", str(server.make_url("/hook?tenant=t1")), credentials=Credentials(query={"k": "v"}), max_retries=0
    )
    try:
        result = await client.send(PartnerRequest("POST", "", {}))
    finally:
        await client.close()
        await server.close()
    assert result.status == 200
    assert seen[0].path == "/hook" and dict(seen[0].query) == {"tenant": "t1", "k": "v"}


def test_the_urls_kept_are_bounded():
    urls = RequestURLs("http://partner.example/api", {"api_key": KEY})
    first = urls.url("/events/0", {})
    assert urls.url("/events/0", {}) is first  # built once
    for n in range(MAX_URLS + 10):
        urls.url(f"/events/{n}", {})
    assert len(urls._urls) <= MAX_URLS
    assert str(urls.url("/events/7", {})) == f"http://partner.example/api/events/7?api_key={KEY}"


async def test_an_unparsable_url_is_an_answerless_retry_not_an_exception():
    client = PartnerClient("Partner", "http://127.0.0.1:1", max_retries=0)
    try:
        result = await client.send(PartnerRequest("POST", ":99999999/x", {}))
    finally:
        await client.close()
    assert (result.outcome, result.status) == (Outcome.RETRY, None)
    assert "InvalidUrl" in result.excerpt


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_a_request_body_is_the_compact_utf8_json_it_always_was(body):
    """The bytes a partner gets (and a signing destination signs) are `json.dumps`'s,
    compact and not ASCII-escaped, from the encoder built once."""
    expected = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    assert BODY_JSON.encode(body) == expected


async def test_an_answer_that_means_done_has_no_excerpt_and_a_refusal_keeps_its_redacted_one():
    answers = iter([(200, {"created": True, "echo": KEY}), (422, {"error": f"bad key {KEY}", "detail": "x" * 500})])

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        status, body = next(answers)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    client = PartnerClient("Partner", str(server.make_url("/")), max_retries=0, secrets=[KEY])
    try:
        done = await client.send(PartnerRequest("POST", "/e", {"n": 1}))
        refused = await client.send(PartnerRequest("POST", "/e", {"n": 2}))
    finally:
        await client.close()
        await server.close()
    assert (done.outcome, done.status, done.excerpt) == (Outcome.DONE, 200, "")
    assert (refused.outcome, refused.status) == (Outcome.FAIL, 422)
    assert refused.excerpt.startswith('{"error": "bad key ***"') and KEY not in refused.excerpt
    assert len(refused.excerpt) == 300
