"""The registered destinations, built from settings: what the core decides with
(`streams.core.destination.Destination`), what every destination remembers (`Memory`), and
what the runtime delivers with (`PartnerClient`). The only place that turns plugins
into running parts; it names no destination."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote

from streams.core.consent import Rule
from streams.core.decision import PartnerRequest
from streams.core.destination import Destination
from streams.core.mappings import Controls, bind
from streams.core.memory import Memory
from streams.destinations import REGISTRY
from streams.destinations.base import DestinationSettings, Plugin
from streams.runtime.delivery import PartnerClient
from streams.settings import Settings


def destinations(s: Settings) -> list[Destination]:
    """The enabled destinations, in registry order, with their settings (which carry
    their own mapping-file options) and the mapping file's rules bound."""
    return [destination(p, s.destinations[p.key], s.mappings) for p in REGISTRY if s.destinations[p.key].enabled]


def destination(p: Plugin, own: DestinationSettings, mappings: Controls) -> Destination:
    """One plugin as the core's `Destination`: its `decide` with its settings bound,
    behind the rules of its table in the mapping file (`streams.core.mappings.bind`)."""
    controls = mappings.of(p.key)
    window = controls.aggregate if p.aggregation is not None else None
    return Destination(
        p.key,
        p.name,
        bind(controls, partial(p.decide, own)),
        window=window,
        aggregation=p.aggregation if window is not None else None,
        consent=frozenset(controls.consent),
    )


def consent_rules(s: Settings) -> list[Rule]:
    """Every registered destination's consent categories, enabled or not: a destination
    switched on later has not been shown what calls consent kept from it."""
    return [Rule(p.key, frozenset(s.mappings.of(p.key).consent)) for p in REGISTRY]


def memories() -> list[Memory]:
    """What every registered destination remembers, enabled or not: a destination
    switched on later finds what it needs already in the users' records."""
    return [p.memory for p in REGISTRY if p.memory is not None]


def clients(s: Settings) -> dict[str, PartnerClient]:
    clients = {}
    for p in REGISTRY:
        own = s.destinations[p.key]
        if own.enabled:
            clients[p.key] = PartnerClient(
                p.name,
                own.base_url,
                credentials=p.credentials(own),
                classify=p.classify,
                rate_limit=own.rate_limit or None,
                timeout=s.http_timeout,
                max_in_flight=s.max_in_flight,
                max_retries=s.quick_retries,
                max_inline_retry_after=s.max_inline_retry_after,
                secrets=s.secrets(),
            )
    return clients


def announce(s: Settings, log: logging.Logger) -> None:
    """One start-up line for each destination left disabled, naming what enables it."""
    for p in REGISTRY:
        if not s.destinations[p.key].enabled:
            log.warning("%s disabled: %s", p.name, p.enable_hint)


def request_view(s: Settings) -> Callable[[str, PartnerRequest], dict[str, Any]]:
    """How a preview shows a destination's request: method, the URL the delivery client
    would call, the headers it would add and the JSON body. Credentials are attached as
    the client attaches them, then masked: their names show, never their values."""
    own = {p.key: (p, s.destinations[p.key]) for p in REGISTRY}

    def view(key: str, request: PartnerRequest) -> dict[str, Any]:
        p, settings = own[key]
        body = json.dumps(request.json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        attached = p.credentials(settings)
        query = {**request.query, **{name: "***" for name in attached.query}}
        url = settings.base_url.rstrip("/") + request.path
        if query:
            url += "?" + "&".join(
                f"{quote(k, safe='')}={v if v == '***' else quote(v, safe='')}" for k, v in query.items()
            )
        headers = {"Content-Type": "application/json", **{name: "***" for name in attached.headers_for(body)}}
        return {"method": request.method, "url": url, "headers": headers, "json": dict(request.json)}

    return view
