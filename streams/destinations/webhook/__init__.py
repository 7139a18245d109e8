"""Webhooks: every Segment call POSTed as JSON to a URL of yours, signed as Segment's
Webhooks destination signs (CONTRACT.md)."""

from __future__ import annotations

from streams.destinations.base import Credentials, Mock, Plugin
from streams.destinations.webhook import mapping, signature
from streams.destinations.webhook.settings import OPTIONS, VARIABLES, WebhookSettings

MOCK_PATH = "/webhook"


def credentials(settings: WebhookSettings) -> Credentials:
    """The operator's extra headers and, with a shared secret, `X-Signature` over the
    exact bytes sent (the delivery client signs each body it sends)."""
    headers = {name: value.reveal() for name, value in settings.headers}
    if not settings.shared_secret:
        return Credentials(headers=headers)
    secret = settings.shared_secret.reveal()
    return Credentials(headers=headers, sign=lambda body: {signature.HEADER: signature.sign(secret, body)})


PLUGIN = Plugin(
    key=mapping.KEY,
    name=mapping.NAME,
    variables=VARIABLES,
    read_settings=WebhookSettings.from_env,
    decide=mapping.decide,
    credentials=credentials,
    mock=Mock(
        factory="streams.destinations.webhook.mock:from_env",
        option="webhook",
        port=8083,
        url_variable="WEBHOOK_URL",
        demo_env={"WEBHOOK_SHARED_SECRET": "demo-webhook-secret"},
        path=MOCK_PATH,
    ),
    enable_hint="set WEBHOOK_URL to enable it",
    options=OPTIONS,
    credentials_check="a webhook receives deliveries only (no request checks its headers alone): headers not sent",
)
