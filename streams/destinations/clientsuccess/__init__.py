"""ClientSuccess: track and page calls as Usage API events, attributed to the user's
organization (CONTRACT.md)."""

from __future__ import annotations

from streams.core.aggregate import Aggregation
from streams.destinations.base import Credentials, Mock, Plugin
from streams.destinations.clientsuccess import mapping
from streams.destinations.clientsuccess.settings import OPTIONS, VARIABLES, ClientSuccessSettings


def credentials(settings: ClientSuccessSettings) -> Credentials:
    """The Usage API takes its key as the `api_key` query parameter."""
    return Credentials(query={"api_key": settings.api_key.reveal()})


PLUGIN = Plugin(
    key=mapping.KEY,
    name=mapping.NAME,
    variables=VARIABLES,
    read_settings=ClientSuccessSettings.from_env,
    decide=mapping.decide,
    credentials=credentials,
    mock=Mock(
        factory="streams.destinations.clientsuccess.mock:from_env",
        option="clientsuccess",
        port=8081,
        url_variable="CLIENTSUCCESS_BASE_URL",
        demo_env={"CLIENTSUCCESS_SOURCE_ID": "demo-source", "CLIENTSUCCESS_API_KEY": "demo-cs-api-key"},
    ),
    enable_hint="set CLIENTSUCCESS_SOURCE_ID and CLIENTSUCCESS_API_KEY to enable it",
    options=OPTIONS,
    aggregation=Aggregation(mapping.aggregate_field, mapping.aggregated),
    credentials_check="the Usage API only records events (no request checks the API key alone): key not sent",
)
