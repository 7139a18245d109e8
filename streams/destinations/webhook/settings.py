"""The webhook's settings: where to POST, how to sign, which extra headers, whether to wait
for the user's group.

Every value is validated at start-up; a bad one raises `SettingsError` naming the variable.
Errors never quote `WEBHOOK_HEADERS` values or `WEBHOOK_URL` credentials (they are secrets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from streams.core.detail import json_kind as _json_kind
from streams.core.mappingfile import string_table
from streams.destinations.base import Variable
from streams.destinations.webhook import signature
from streams.envreader import EnvReader, Secret, SettingsError

URL = "WEBHOOK_URL"
SHARED_SECRET = "WEBHOOK_SHARED_SECRET"
HEADERS = "WEBHOOK_HEADERS"
WAIT_FOR_GROUP = "WEBHOOK_WAIT_FOR_GROUP"
RATE_LIMIT = "CS_RELAY_WEBHOOK_RATE_LIMIT"

VARIABLES = (
    Variable(
        URL,
        "unset (disabled)",
        "the receiver's URL; every call is POSTed there as Segment JSON (the mock: `http://127.0.0.1:8083/webhook`)",
        allowed="an `http://` or `https://` URL without credentials",
    ),
    Variable(
        SHARED_SECRET,
        "unset (unsigned)",
        "signs each request: `X-Signature` = hex HMAC-SHA1 of the body, as Segment's webhooks do",
        secret=True,
    ),
    Variable(
        HEADERS,
        "unset (none)",
        "extra headers for the receiver's own auth; the values are secrets",
        secret=True,
        allowed='a JSON object of name to string value, e.g. `{"Authorization": "Bearer ..."}`; '
        "not Content-Type, User-Agent, X-Signature",
    ),
    Variable(
        WAIT_FOR_GROUP,
        "false",
        "true: hold a user's track, page and screen calls until the user's group is known",
        allowed="true or false (1/0, yes/no, on/off)",
    ),
    Variable(
        RATE_LIMIT,
        "0: none",
        "the same as `CS_RELAY_CLIENTSUCCESS_RATE_LIMIT`, for the webhook",
        allowed="0 – 100,000 per second",
    ),
)

# Headers the delivery client or the signature own; WEBHOOK_HEADERS may not set them.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        signature.HEADER,
        "Content-Type",
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Connection",
        "User-Agent",
    )
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP field name (RFC 9110 token)
# Its own keys in the mapping file (docs/mappings.md): each a field of WebhookSettings.
OPTIONS = {"trait_renames": string_table}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class WebhookSettings:
    url: str = ""
    shared_secret: Secret = Secret("")
    headers: tuple[tuple[str, Secret], ...] = ()
    wait_for_group: bool = False
    rate_limit: float = 0.0
    # From the mapping file (CS_RELAY_MAPPINGS): traits renamed in identify and group calls
    # and in the `context.group` cs-relay adds.
    trait_renames: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def base_url(self) -> str:
        """The delivery client posts to `base_url + request.path`; the path is ""."""
        return self.url

    def secrets(self) -> list[str]:
        values = [self.shared_secret.reveal(), *(value.reveal() for _, value in self.headers)]
        return [v for v in values if v]

    @classmethod
    def from_env(cls, read: EnvReader) -> WebhookSettings:
        return cls(
            url=parse_url(read.text(URL, "")),
            shared_secret=Secret(read.text(SHARED_SECRET, "")),
            headers=parse_headers(read.text(HEADERS, "")),
            wait_for_group=parse_flag(WAIT_FOR_GROUP, read.text(WAIT_FOR_GROUP, "false")),
            rate_limit=read.number(RATE_LIMIT, 0.0, low=0, high=100_000),
        )


def parse_url(value: str) -> str:
    """`WEBHOOK_URL`, checked: http or https with a host, no user:password in it."""
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise SettingsError(f"{URL}: not a valid URL") from None
    if parts.username or parts.password:  # never quote it: it holds a password
        raise SettingsError(f"{URL}: credentials do not belong in the URL; send them with {HEADERS}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{URL}: expected an http:// or https:// URL (got {value!r})")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise SettingsError(f"{URL}: holds a space or a control character")
    return value


def parse_flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name}: expected true or false (got {value!r})")


class _Object(list):
    """A decoded JSON object as its (name, value) pairs: duplicate names stay visible."""


def parse_headers(value: str) -> tuple[tuple[str, Secret], ...]:
    """`WEBHOOK_HEADERS`: a JSON object of header name -> string value. Errors name the
    variable and the header, never a value."""
    if not value:
        return ()
    try:
        decoded = json.loads(value, object_pairs_hook=_Object)
    except ValueError as exc:
        position = getattr(exc, "pos", None)
        where = f" at character {position + 1}" if isinstance(position, int) else ""
        raise SettingsError(
            f'{HEADERS}: not valid JSON{where}; expected an object like {{"X-Api-Key": "..."}}'
        ) from None
    if not isinstance(decoded, _Object):
        raise SettingsError(f"{HEADERS}: expected a JSON object of header name to value, not {_kind(decoded)}")
    seen: set[str] = set()
    out = []
    for name, header_value in decoded:
        if not _TOKEN.fullmatch(name):
            raise SettingsError(f"{HEADERS}: {name!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
        if name.lower() in RESERVED_HEADERS:
            raise SettingsError(f"{HEADERS}: {name} is set by cs-relay and cannot be overridden")
        if name.lower() in seen:
            raise SettingsError(f"{HEADERS}: {name} is given more than once")
        seen.add(name.lower())
        if not isinstance(header_value, str):
            raise SettingsError(f"{HEADERS}: the value of {name} must be a string, not {_kind(header_value)}")
        if any(ch in header_value for ch in "\r\n\0") or header_value != header_value.strip():
            raise SettingsError(f"{HEADERS}: the value of {name} holds a line break, a NUL or leading/trailing spaces")
        out.append((name, Secret(header_value)))
    return tuple(out)


def _kind(value: Any) -> str:
    return "an object" if isinstance(value, _Object) else _json_kind(value)
