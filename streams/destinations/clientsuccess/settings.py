"""ClientSuccess's settings: the project (source id) and API key of the Usage API."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote

from streams.core.mappingfile import non_empty_string
from streams.destinations.base import Variable
from streams.envreader import EnvReader, Secret, http_url

PRODUCTION_URL = "https://usage.clientsuccess.com"

VARIABLES = (
    Variable(
        "CLIENTSUCCESS_SOURCE_ID", "unset (disabled)", "the ClientSuccess project (source) id, in the Usage API path"
    ),
    Variable(
        "CLIENTSUCCESS_API_KEY",
        "unset (disabled)",
        "the Usage API key, sent as the `api_key` query parameter",
        secret=True,
    ),
    Variable(
        "CLIENTSUCCESS_BASE_URL",
        PRODUCTION_URL,
        "the Usage API host (the mock: `http://127.0.0.1:8081`)",
        allowed="an `http://` or `https://` URL without credentials",
    ),
    Variable(
        "CS_RELAY_CLIENTSUCCESS_RATE_LIMIT",
        "0: none",
        "the most requests per second to ClientSuccess. On a 429 the rate halves (never below 5 % of this), "
        "then climbs back over 30 s",
        allowed="0 – 100,000 per second",
    ),
)


@dataclass(frozen=True)
class ClientSuccessSettings:
    source_id: str = ""
    api_key: Secret = Secret("")
    base_url: str = PRODUCTION_URL
    rate_limit: float = 0.0
    # From the mapping file (CS_RELAY_MAPPINGS), not the environment: the property that
    # carries the Usage API `value`.
    value_property: str = "value"

    @property
    def enabled(self) -> bool:
        return bool(self.source_id) and bool(self.api_key)

    def secrets(self) -> list[str]:
        return [self.api_key.reveal()] if self.api_key else []

    @cached_property
    def events_path(self) -> str:
        """The Usage API path its events go under (`{events_path}/{eventId}`), built once."""
        return f"/collector/1.0.0/projects/{quote(self.source_id, safe='')}/events"

    @classmethod
    def from_env(cls, read: EnvReader) -> ClientSuccessSettings:
        return cls(
            source_id=read.text("CLIENTSUCCESS_SOURCE_ID", ""),
            api_key=Secret(read.text("CLIENTSUCCESS_API_KEY", "")),
            base_url=read.text("CLIENTSUCCESS_BASE_URL", PRODUCTION_URL, check=http_url),
            rate_limit=read.number("CS_RELAY_CLIENTSUCCESS_RATE_LIMIT", 0.0, low=0, high=100_000),
        )


# Its own keys in the mapping file (docs/mappings.md): each a field above.
OPTIONS = {"value_property": non_empty_string}
