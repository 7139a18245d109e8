"""CustomerSuccessBox's settings: the tenant's host and its POST API key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.core.mappingfile import string_table
from streams.destinations.base import Variable
from streams.envreader import EnvReader, Secret, http_url_or_empty

VARIABLES = (
    Variable(
        "CSB_API_KEY",
        "unset (disabled)",
        "the CustomerSuccessBox POST API key, sent as `Authorization: Bearer`",
        secret=True,
    ),
    Variable(
        "CSB_BASE_URL",
        "unset (disabled)",
        "your tenant's host, `https://{tenant}.customersuccessbox.com` (the mock: `http://127.0.0.1:8082`)",
        allowed="an `http://` or `https://` URL without credentials",
    ),
    Variable(
        "CS_RELAY_CSB_RATE_LIMIT",
        "0: none",
        "the same as `CS_RELAY_CLIENTSUCCESS_RATE_LIMIT`, for CustomerSuccessBox",
        allowed="0 – 100,000 per second",
    ),
)


@dataclass(frozen=True)
class CustomerSuccessBoxSettings:
    api_key: Secret = Secret("")
    base_url: str = ""
    rate_limit: float = 0.0
    # From the mapping file (CS_RELAY_MAPPINGS): traits renamed on identify and group calls.
    trait_renames: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.api_key) and bool(self.base_url)

    def secrets(self) -> list[str]:
        return [self.api_key.reveal()] if self.api_key else []

    @classmethod
    def from_env(cls, read: EnvReader) -> CustomerSuccessBoxSettings:
        return cls(
            api_key=Secret(read.text("CSB_API_KEY", "")),
            base_url=read.text("CSB_BASE_URL", "", check=http_url_or_empty),
            rate_limit=read.number("CS_RELAY_CSB_RATE_LIMIT", 0.0, low=0, high=100_000),
        )


# Its own keys in the mapping file (docs/mappings.md): each a field above.
OPTIONS = {"trait_renames": string_table}
