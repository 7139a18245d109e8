"""`cs-relay inspect user|group|pending ID` and `cs-relay status`: ask a running worker.

They call the worker's HTTP endpoints (`streams.ops.admin`) at `--url`, else at
`http://CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT`, with `Authorization: Bearer
$CS_RELAY_ADMIN_TOKEN` when that is set. Any worker will do: one that does not own the
user forwards the request to the one that does.

Output: indented JSON, coloured when stdout is a terminal (and NO_COLOR is unset);
`--json` prints it compact on one line, for scripts. `status` prints a table unless
`--json`. Exit status: 0 found, 1 the worker answered an error (not found, 401, ...),
2 the worker could not be reached.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

PATHS = {"user": "/users/", "group": "/groups/", "pending": "/pending/"}
TIMEOUT = 15.0

# ANSI colours of JSON tokens
_KEY, _STRING, _NUMBER, _LITERAL, _RESET = "\033[1;34m", "\033[32m", "\033[36m", "\033[35m", "\033[0m"


class Unreachable(Exception):
    pass


def get(url: str, token: str = "", timeout: float = TIMEOUT, data: bytes | None = None) -> tuple[int, Any]:
    """GET a JSON document (POST `data`, JSON, when given): (HTTP status, parsed body).
    Raises `Unreachable`."""
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: a URL urllib cannot use; HTTPException: the peer does not speak HTTP
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise Unreachable(f"cannot reach the worker at {url}: {' '.join(str(reason).split())}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"error": "not_json", "detail": raw[:200].decode("utf-8", "replace")}


def render(value: Any, *, color: bool, compact: bool = False) -> str:
    """JSON text: compact, indented, or indented with ANSI colours."""
    if compact:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if not color:
        return json.dumps(value, ensure_ascii=False, indent=2)
    return _colored(value, 0)


def _colored(value: Any, depth: int) -> str:
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{inner}{_KEY}{json.dumps(str(k), ensure_ascii=False)}{_RESET}: {_colored(v, depth + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(f"{inner}{_colored(v, depth + 1)}" for v in value) + f"\n{pad}]"
    text = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        return f"{_STRING}{text}{_RESET}"
    if isinstance(value, bool) or value is None:
        return f"{_LITERAL}{text}{_RESET}"
    return f"{_NUMBER}{text}{_RESET}"


def wants_color(out: TextIO) -> bool:
    return out.isatty() and not os.environ.get("NO_COLOR")


def _failed(status: int, body: Any, err: TextIO) -> int:
    detail = body.get("detail") or body.get("error") if isinstance(body, dict) else None
    print(f"error: the worker answered {status}: {detail or body}", file=err)
    return 1


def inspect(
    what: str, key: str, *, url: str, token: str, compact: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        status, body = get(url.rstrip("/") + PATHS[what] + quote(key, safe=""), token)
    except Unreachable as exc:
        print(f"error: {exc}", file=err)
        return 2
    if status != 200:
        return _failed(status, body, err)
    print(render(body, color=not compact and wants_color(out), compact=compact), file=out)
    return 0


def status_table(doc: Mapping[str, Any]) -> str:
    """`cs-relay status` as text."""
    lines = [f"worker {doc.get('worker', '?')} ({'ready' if doc.get('ready') else 'NOT READY'})", ""]
    columns = ("delivered", "retrying", "pending", "dead_lettered")
    names = [d.get("name", key) for key, d in doc.get("destinations", {}).items()]
    width = max([len("destination"), *map(len, names)])
    lines.append(f"{'destination':<{width}}  " + "  ".join(f"{c.replace('_', '-'):>13}" for c in columns))
    for key, dest in doc.get("destinations", {}).items():
        lines.append(f"{dest.get('name', key):<{width}}  " + "  ".join(f"{dest.get(c, 0):>13}" for c in columns))
    if not doc.get("destinations"):
        lines.append("(no destination enabled)")
    lines.append("")
    lines.append(f"dead-lettered before routing (bad input): {doc.get('dead_lettered_without_destination', 0)}")
    lag = doc.get("consumer_lag", {})
    parts = ", ".join(f"{p['topic']}/{p['partition']}: {p['lag']}" for p in lag.get("partitions", []))
    lines.append(f"consumer lag: {lag.get('total', 0)}" + (f" ({parts})" if parts else ""))
    lines.append(f"events in progress: {doc.get('unacknowledged_events', 0)}")
    return "\n".join(lines)


def status(*, url: str, token: str, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        code, body = get(url.rstrip("/") + "/status", token)
    except Unreachable as exc:
        print(f"error: {exc}", file=err)
        return 2
    if code != 200:
        return _failed(code, body, err)
    print(render(body, color=False, compact=True) if as_json else status_table(body), file=out)
    return 0
