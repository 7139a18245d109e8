"""CustomerSuccessBox: identify, group, track (product usage as feature calls) and page
calls to its JavaScript API, each with the account it belongs to (CONTRACT.md)."""

from __future__ import annotations

from streams.core.aggregate import Aggregation
from streams.destinations.base import Credentials, Mock, Plugin
from streams.destinations.customersuccessbox import mapping, memory
from streams.destinations.customersuccessbox.settings import OPTIONS, VARIABLES, CustomerSuccessBoxSettings


def credentials(settings: CustomerSuccessBoxSettings) -> Credentials:
    """A bearer token, as the vendor's SDKs send it."""
    return Credentials(headers={"Authorization": f"Bearer {settings.api_key.reveal()}"})


PLUGIN = Plugin(
    key=mapping.KEY,
    name=mapping.NAME,
    variables=VARIABLES,
    read_settings=CustomerSuccessBoxSettings.from_env,
    decide=mapping.decide,
    credentials=credentials,
    mock=Mock(
        factory="streams.destinations.customersuccessbox.mock:from_env",
        option="csb",
        port=8082,
        url_variable="CSB_BASE_URL",
        demo_env={"CSB_API_KEY": "demo-csb-api-key"},
    ),
    enable_hint="set CSB_API_KEY and CSB_BASE_URL to enable it",
    memory=memory.MEMORY,
    options=OPTIONS,
    aggregation=Aggregation(mapping.aggregate_field, mapping.aggregated),
    credentials_check=(
        "its API only records calls (identify, account, track, feature, page; no request checks the key alone): "
        "key not sent"
    ),
)
