"""The enabled destinations, built from settings: what the core decides with
(`streams.core.step.Destination`) and what the runtime delivers with (`PartnerClient`)."""

from __future__ import annotations

import logging

from streams.core.step import Destination
from streams.destinations.clientsuccess import mapping as clientsuccess
from streams.destinations.customersuccessbox import mapping as customersuccessbox
from streams.runtime.delivery import PartnerClient
from streams.settings import Settings


def destinations(s: Settings) -> list[Destination]:
    enabled = []
    if s.clientsuccess.enabled:
        source_id = s.clientsuccess.source_id
        enabled.append(
            Destination(
                clientsuccess.KEY,
                clientsuccess.NAME,
                lambda msg, user, groups: clientsuccess.decide(msg, user, groups, source_id),
            )
        )
    if s.customersuccessbox.enabled:
        enabled.append(Destination(customersuccessbox.KEY, customersuccessbox.NAME, customersuccessbox.decide))
    return enabled


def clients(s: Settings) -> dict[str, PartnerClient]:
    common = dict(
        timeout=s.http_timeout, max_in_flight=s.max_in_flight, max_retries=s.quick_retries, secrets=s.secrets()
    )
    clients = {}
    if s.clientsuccess.enabled:
        clients[clientsuccess.KEY] = PartnerClient(
            clientsuccess.NAME,
            s.clientsuccess.base_url,
            query_auth={"api_key": s.clientsuccess.api_key.reveal()},
            rate_limit=s.clientsuccess_rate_limit or None,
            **common,
        )
    if s.customersuccessbox.enabled:
        clients[customersuccessbox.KEY] = PartnerClient(
            customersuccessbox.NAME,
            s.customersuccessbox.base_url,
            bearer=s.customersuccessbox.api_key.reveal(),
            rate_limit=s.csb_rate_limit or None,
            **common,
        )
    return clients


def announce(s: Settings, log: logging.Logger) -> None:
    """One start-up line for each destination left disabled, naming what enables it."""
    if not s.clientsuccess.enabled:
        log.warning(
            "ClientSuccess disabled: set CLIENTSUCCESS_SOURCE_ID and CLIENTSUCCESS_API_KEY to enable it"
        )
    if not s.customersuccessbox.enabled:
        log.warning("CustomerSuccessBox disabled: set CSB_API_KEY and CSB_BASE_URL to enable it")
