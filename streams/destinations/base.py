"""What a destination is to cs-relay: one `Plugin`, plain data and pure functions.

Each destination is a folder under `streams/destinations/` holding its settings, its
mapping (message + state -> decision), what it remembers of users and groups, how its
credentials are attached, its mock server, its CONTRACT.md and its tests. The folder's
`__init__.py` exports `PLUGIN`; `streams.destinations.REGISTRY` lists them, one line
each. Settings, the runtime, `cs-relay mocks`, `cs-relay dev`, the test harness and the
benchmark iterate over the registry: adding a destination edits no shared code.

Nothing here does I/O. A plugin's `mock` names an aiohttp factory by import path, so
the worker never imports a mock.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from streams.core.aggregate import Aggregation
from streams.core.decision import Decision
from streams.core.memory import Memory
from streams.core.message import Message
from streams.core.retry import Outcome, classify
from streams.core.state import GroupLookup, UserState
from streams.envreader import EnvReader


class DestinationSettings(Protocol):
    """What every destination's settings object offers the runtime."""

    @property
    def enabled(self) -> bool: ...

    @property
    def base_url(self) -> str: ...

    @property
    def rate_limit(self) -> float: ...  # requests per second; 0: none

    def secrets(self) -> list[str]: ...  # every credential value, for redaction


S = TypeVar("S", bound=DestinationSettings)


@dataclass(frozen=True)
class Variable:
    """One environment variable of a destination, for the docs and `config`."""

    name: str
    default: str
    meaning: str
    secret: bool = False
    allowed: str = "text"  # what values it takes, for the configuration reference


@dataclass(frozen=True)
class Credentials:
    """What a destination's requests carry beyond their bodies, read from its settings
    once per delivery client: the headers and query parameters every request carries
    and, for a destination that signs, `sign(body)`: the headers computed over each
    exact body sent. The client attaches them as a request goes out, so no request in
    state, a log or a dead letter ever holds a key; their values never show in a repr."""

    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    query: Mapping[str, str] = field(default_factory=dict, repr=False)
    sign: Callable[[bytes], Mapping[str, str]] | None = field(default=None, repr=False)

    def headers_for(self, body: bytes) -> dict[str, str]:
        """Every header a request with `body` carries: the fixed ones and the signed ones."""
        return {**self.headers, **(self.sign(body) if self.sign is not None else {})}


@dataclass(frozen=True)
class Mock:
    """How `cs-relay mocks`, `cs-relay dev`, the tests and the benchmark run the
    destination's imitation, and point a worker at it."""

    factory: str  # "module:function"; function(env) -> aiohttp.web.Application
    option: str  # `cs-relay mocks --{option}-port`
    port: int  # its default port there
    url_variable: str  # the worker variable that takes the mock's URL
    demo_env: Mapping[str, str]  # variables both the mock and the worker read (demo credentials)
    path: str = ""  # appended to the mock's URL in `url_variable`

    def create_app(self, env: Mapping[str, str]) -> Any:
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(env)

    def worker_env(self, url: str, env: Mapping[str, str]) -> dict[str, str]:
        """The worker's variables for this mock at `url` (credentials from `env`, else the demo ones)."""
        out = {name: env.get(name, value) for name, value in self.demo_env.items()}
        out[self.url_variable] = url.rstrip("/") + self.path
        return out


@dataclass(frozen=True)
class Plugin(Generic[S]):
    """A destination, as the registry lists it."""

    key: str  # stable identifier: pending queues, slots, metrics, dead-letter headers
    name: str  # its Segment `integrations` name, and its name in logs
    variables: tuple[Variable, ...]
    read_settings: Callable[[EnvReader], S]
    decide: Callable[[S, Message, UserState, GroupLookup], Decision]
    credentials: Callable[[S], Credentials]  # read once per delivery client
    mock: Mock
    enable_hint: str  # what a disabled destination's start-up line tells the operator
    memory: Memory | None = None  # what it remembers of users and groups, in its own slot
    classify: Callable[[int | None], Outcome] = classify  # its answers, when the shared rules do not fit
    # Its own keys in its table of the mapping file (CS_RELAY_MAPPINGS, docs/mappings.md), each
    # with a validator (TOML value in, value out; ValueError says what was expected). Each key
    # names a field of its settings: `streams.settings` binds `replace(settings, **options)`,
    # so `decide` reads them like any setting and stays pure.
    options: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # Which of its requests `aggregate` (mapping file) folds into windows, and the request
    # a closed window sends (streams/core/aggregate.py); None: it aggregates nothing.
    aggregation: Aggregation | None = None
    # What `cs-relay check` says of its credentials: the harmless authenticated request
    # its API offers, or why it has none (then check only reaches its base URL).
    credentials_check: str = "its API has no request that checks the credentials without recording something: not asked"
