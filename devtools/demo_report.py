"""The end of `make run`'s demo: what each partner now holds and why the sample's calls
became that many requests, then where the console is and with which token.

One row per partner: the accounts and users its mock now knows, the requests it
received (and accepted), the events a worker held until it could attribute them and
has since released, and the calls it skipped by its rules or dead-lettered. The
partners' figures come from each mock's `/_mock/requests` and `/_mock/state`; the
workers' from their `/metrics`, summed over the workers. A mock's state is read by its
shape (`organizations` or `accounts` with their users, or the Segment `messages` a
webhook received), so a new destination's mock shows "-" where its shape is another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streams.destinations import REGISTRY

# The console's token when `cs-relay dev` is started without CS_RELAY_ADMIN_TOKEN: the
# workers listen on 127.0.0.1 only, so a fixed development token does no harm there.
DEV_ADMIN_TOKEN = "cs-relay-dev-token"
COLUMNS = ("accounts", "users", "requests", "accepted", "held, released", "skipped", "dead-lettered")


@dataclass(frozen=True)
class PartnerRow:
    name: str
    accounts: int | None
    users: int | None
    requests: int
    accepted: int
    released: int
    skipped: int
    dead_lettered: int

    def cells(self) -> list[str]:
        values = (self.accounts, self.users, self.requests, self.accepted, self.released, self.skipped)
        return [self.name, *("-" if v is None else str(v) for v in values), str(self.dead_lettered)]


def accounts_and_users(view: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The accounts and users a mock's `/_mock/state` holds, read by its shape."""
    if isinstance(view.get("organizations"), Mapping):
        orgs = view["organizations"]
        return len(orgs), len({u for org in orgs.values() for u in (org.get("users") or {})})
    if isinstance(view.get("accounts"), Mapping):
        users = view.get("users") or {}
        return len(view["accounts"]), len({u for per_account in users.values() for u in per_account})
    if isinstance(view.get("messages"), list):
        calls = [entry.get("message") or {} for entry in view["messages"]]
        groups = {c.get("groupId") for c in calls if c.get("type") == "group" and c.get("groupId")}
        users = {c.get("userId") for c in calls if c.get("userId")}
        return len(groups), len(users)
    return None, None


def worker_counts(metrics_texts: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per destination, summed over the workers' `/metrics`: held (ever), pending now
    (held or releasing), skipped and dead-lettered."""
    out: dict[str, dict[str, float]] = {}
    for text in metrics_texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                dest = sample.labels.get("destination")
                if dest is None:
                    continue  # "": dead letters of calls refused before any destination
                counts = out.setdefault(dest, {"held": 0, "pending": 0, "skipped": 0, "dead_lettered": 0})
                if sample.name == "cs_relay_held_total":
                    counts["held"] += sample.value
                elif sample.name == "cs_relay_pending_events" and sample.labels.get("state") in ("held", "releasing"):
                    counts["pending"] += sample.value
                elif sample.name == "cs_relay_skipped_total":
                    counts["skipped"] += sample.value
                elif sample.name == "cs_relay_dead_lettered_total":
                    counts["dead_lettered"] += sample.value
    return out


def table(rows: Sequence[PartnerRow]) -> str:
    header = ["partner", *COLUMNS]
    cells = [header, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = []
    for line in cells:
        lines.append(
            "  ".join([line[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))])
        )
    return "\n".join(lines)


def console_lines(worker_url: str, own_token: bool) -> list[str]:
    """Where the console is, and the token to sign in with."""
    if own_token:
        return [f"console   {worker_url}/console (sign in with your CS_RELAY_ADMIN_TOKEN)"]
    return [
        f"console   {worker_url}/console (development token: {DEV_ADMIN_TOKEN})",
        f"          in another shell: export CS_RELAY_ADMIN_TOKEN={DEV_ADMIN_TOKEN}; .venv/bin/cs-relay status",
    ]


def render(rows: Sequence[PartnerRow], sent: int, refused: int, worker_url: str, own_token: bool) -> str:
    lines = [
        "",
        f"The demo sent {sent} Segment calls; {refused} were not valid (dead-lettered before reaching any",
        f"partner), the other {sent - refused} went to each partner, which took or skipped each by its own rules:",
        "",
        table(rows),
        "",
        "accounts, users: what the partner's mock now holds. requests: what it received (accepted: 2xx).",
        "held, released: events a worker held until it could attribute them (a track before the user's",
        "group call), then sent. skipped: calls a partner does not take (an identify for ClientSuccess,",
        "screens, ...). dead-lettered: rejected by the partner or held too long; the reasons and the",
        "refused calls: .venv/bin/cs-relay dlq list",
        "",
        *console_lines(worker_url, own_token),
    ]
    return "\n".join(lines)


async def settled_requests(url: str, *, quiet_for: float = 3.0, timeout: float = 90.0) -> list:
    """The mock's recorded requests once no new one has arrived for `quiet_for` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url + "/_mock/requests") as response:
                requests = await response.json()
            if len(requests) != last:
                last, since = len(requests), time.monotonic()
            elif len(requests) and time.monotonic() - since >= quiet_for:
                return requests
            if time.monotonic() > deadline:
                return requests
            await asyncio.sleep(0.5)


async def demo_report(
    mock_urls: Mapping[str, str], worker_urls: Sequence[str], env: Mapping[str, str], sample: Path
) -> str:
    """The closing report of `cs-relay dev --demo` (`env`: the workers' environment,
    `sample`: the JSON-lines file it sent)."""
    sent = sum(1 for line in sample.read_text().splitlines() if line.strip())
    token = env.get("CS_RELAY_ADMIN_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rows = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        # Each partner's quiet spell is awaited side by side, not one after the other.
        settled = await asyncio.gather(*(settled_requests(mock_urls[p.key]) for p in REGISTRY))
        requests = {p.key: found for p, found in zip(REGISTRY, settled, strict=True)}
        metrics = []
        for url in worker_urls:
            async with session.get(url + "/metrics", headers=headers) as response:
                metrics.append(await response.text() if response.status == 200 else "")
        counts = worker_counts(metrics)
        for p in REGISTRY:
            async with session.get(mock_urls[p.key] + "/_mock/state") as response:
                accounts, users = accounts_and_users(await response.json())
            mine = counts.get(p.key, {})
            rows.append(
                PartnerRow(
                    p.name,
                    accounts,
                    users,
                    len(requests[p.key]),
                    sum(1 for r in requests[p.key] if 200 <= r["status"] < 300),
                    int(mine.get("held", 0) - mine.get("pending", 0)),
                    int(mine.get("skipped", 0)),
                    int(mine.get("dead_lettered", 0)),
                )
            )
    own_token = bool(token) and token != DEV_ADMIN_TOKEN
    return render(rows, sent, int(counts.get("", {}).get("dead_lettered", 0)), worker_urls[0], own_token)
