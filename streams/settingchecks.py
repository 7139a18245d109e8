"""What makes settings valid, apart from reading them (`streams.settings`): each
variable's own check of its value's form (given to `EnvReader` as `check=`: an error
sentence, or None), and the checks across settings run once they are all read
(`first_problem`), such as the pending index row's bound against the registered
destinations. Every problem names its variable: `Settings.from_env` raises it as a
`SettingsError`, and `cs-relay config` lists it."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from yarl import URL

from streams.core.pendingrows import INDEX_MAX_BYTES, max_events_within, worst_index_bytes
from streams.envreader import ADMIN_TOKEN_MIN_CHARS
from streams.eventloop import CHOICES as EVENT_LOOPS

if TYPE_CHECKING:
    from streams.settings import Settings


# ------------------------------------------------------------------ across settings


def first_problem(settings: Settings) -> str | None:
    """The first check across settings that fails, or None."""
    return exposure_problem(settings) or pending_problem(settings)


def exposure_problem(settings: Settings) -> str | None:
    """Secure by default: a web server reachable beyond this machine (the image binds
    0.0.0.0) serves users' state and metrics, so it needs CS_RELAY_ADMIN_TOKEN."""
    if settings.admin_token or is_loopback(settings.web_host):
        return None
    return (
        f"CS_RELAY_ADMIN_TOKEN: required when the web server binds beyond loopback "
        f"(CS_RELAY_WEB_HOST={settings.web_host or '(all)'}): set a token of at least "
        f"{ADMIN_TOKEN_MIN_CHARS} characters, or bind CS_RELAY_WEB_HOST=127.0.0.1"
    )


def pending_problem(settings: Settings) -> str | None:
    """A user's pending index row must fit under its bound at the worst, with every
    registered destination (streams.core.pendingrows.worst_index_bytes)."""
    keys = list(settings.destinations)  # every registered one's, enabled or not
    worst = worst_index_bytes(keys, settings.pending_max_events)
    if worst <= INDEX_MAX_BYTES:
        return None
    return (
        f"CS_RELAY_PENDING_MAX_EVENTS: {settings.pending_max_events} is too many for {len(keys)} registered "
        f"destinations: a user's pending index row could reach {worst} bytes, more than its bound of "
        f"{INDEX_MAX_BYTES} (under the changelog topics' 1 MiB record limit); set at most {max_events_within(keys)}"
    )


# ------------------------------------------------------------------ one variable's value


def bootstrap(value: str) -> str | None:
    for server in value.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            return "expected host:port[,host:port...]"
    return None


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a wildcard, another address or a host name: reachable from elsewhere


def url_host(host: str) -> str:
    """`host` as it goes in a URL: an IPv6 address in brackets, anything else as is."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def advertised_host(value: str) -> str | None:
    if value.strip("[]") in WILDCARD_HOSTS:
        return "expected a host name or address other workers can reach, not a wildcard"
    try:
        url = URL(f"http://{url_host(value)}:1/")
    except ValueError:
        url = None
    if url is None or url.port != 1 or not url.host or url.user or url.path != "/" or any(c.isspace() for c in value):
        return "expected a host name or address, without scheme or port"
    return None


def allowed_hosts(value: str) -> str | None:
    items = [item.strip() for item in value.split(",")]
    for number, item in enumerate(items, 1):
        if not item or advertised_host(item):
            return (
                f"item {number} of {len(items)}: expected host names or addresses, "
                "without scheme or port, comma-separated"
            )
    return None


def topic_name(value: str) -> str | None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if len(value) > 200 or not set(value) <= allowed:
        return "expected letters, digits, '.', '_' or '-' (at most 200)"
    return None


def log_format(value: str) -> str | None:
    if value.lower() not in {"text", "json"}:
        return "expected text or json"
    return None


def event_loop(value: str) -> str | None:
    if value.lower() not in EVENT_LOOPS:
        return f"expected {' or '.join(EVENT_LOOPS)}"
    return None


def log_level(value: str) -> str | None:
    if value.lower() not in {"debug", "info", "warning", "error", "critical"}:
        return "expected one of debug, info, warning, error, critical"
    return None
