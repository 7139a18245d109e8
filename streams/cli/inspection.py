"""`cs-relay inspect user|group|pending ID` and `cs-relay status`: ask a running worker.

They call the worker's HTTP endpoints (`streams.ops.admin`) at `--url`, else at
`http://CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT`, with `Authorization: Bearer
$CS_RELAY_ADMIN_TOKEN` when that is set. Any worker will do: one that does not own the
user forwards the request to the one that does.

`inspect` shows the worker's record made readable (`readable`): times as ISO 8601 in UTC
(the records keep some as unix seconds), a waiting call as its JSON rather than a
string of it, and none of the record's format version or internal counters. For a user
holding its own copy of its group (`group_copy`), a note after the record says which
copy the partners receive (`group_copy_note`).

Output: indented JSON, coloured when stdout is a terminal (and NO_COLOR is unset);
`--json` prints it compact on one line, for scripts (no note). `status` prints a table
unless `--json`. Exit status: 0 found, 1 the worker answered an error (not found, 401,
...), 2 the worker could not be reached. A 401 says to export CS_RELAY_ADMIN_TOKEN.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
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


def _failed(status: int, body: Any, err: TextIO, token: str) -> int:
    detail = body.get("detail") or body.get("error") if isinstance(body, dict) else None
    hint = f"; {token_hint(token)}" if status == 401 else ""
    print(f"error: the worker answered {status}: {detail or body}{hint}", file=err)
    return 1


def token_hint(token: str) -> str:
    """What to do about a 401: the worker was started with CS_RELAY_ADMIN_TOKEN."""
    if not token:
        return (
            "the worker was started with CS_RELAY_ADMIN_TOKEN: export the same value in this shell "
            "(export CS_RELAY_ADMIN_TOKEN=...) and run the command again"
        )
    return "CS_RELAY_ADMIN_TOKEN in this shell is not the worker's: export the value the worker was started with"


# Record fields the worker keeps as unix seconds; `readable` shows them as ISO 8601.
_TIME_SUFFIXES = ("_at", "_since")
# Record fields that say nothing to an operator: the format version, the numbers that
# order a user's waiting events (the list's order says it).
_INTERNAL = frozenset({"v", "seq", "next_seq"})


def iso(seconds: float) -> str:
    """Unix seconds as ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readable(value: Any) -> Any:
    """A worker's record for people: unix-second times (`held_at`, `next_at`,
    `merging_since`, ...) as ISO 8601, a waiting call's `raw` text as its JSON
    (`message`), without the format version and the internal sequence numbers."""
    if isinstance(value, list):
        return [readable(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _INTERNAL:
            continue
        if key.endswith(_TIME_SUFFIXES) and isinstance(item, (int, float)) and not isinstance(item, bool):
            out[key] = iso(item)
        elif key == "raw" and isinstance(item, str):
            try:
                out["message"] = json.loads(item)
            except ValueError:
                out["raw"] = item
        else:
            out[key] = readable(item)
    return out


def group_copy_note(user: Mapping[str, Any], group: Mapping[str, Any] | None) -> str | None:
    """What a user's `group_copy` is, and which copy of the group the partners receive:
    the newer (by `updated_at`) of the user's copy and the group's own record."""
    copy = user.get("group_copy")
    if not isinstance(copy, Mapping):
        return None
    group_id = copy.get("group_id")
    lines = [
        f"group_copy: this user's own copy of group {group_id!r}, as its last group call left it "
        f"(updated {copy.get('updated_at')}).",
        "Partners receive the newer of this copy and the group's own record (updated by every member's "
        f"group call; `cs-relay inspect group {group_id}`),",
    ]
    if group is None:
        lines.append("and the group's record was not found: they receive this copy.")
    elif (group.get("updated_at") or "") > (copy.get("updated_at") or ""):
        lines.append(f"here the group's record (updated {group.get('updated_at')}).")
    else:
        lines.append("here this copy (the group's record is not newer).")
    return "\n".join(lines)


def inspect(
    what: str, key: str, *, url: str, token: str, compact: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    base = url.rstrip("/")
    try:
        status, body = get(base + PATHS[what] + quote(key, safe=""), token)
        note = None
        if status == 200 and what == "user" and not compact and isinstance(body, dict):
            note = _note(base, body, token)
    except Unreachable as exc:
        print(f"error: {exc}", file=err)
        return 2
    if status != 200:
        return _failed(status, body, err, token)
    print(render(readable(body), color=not compact and wants_color(out), compact=compact), file=out)
    if note:
        print("\n" + note, file=out)
    return 0


def _note(base: str, user: Mapping[str, Any], token: str) -> str | None:
    copy = user.get("group_copy")
    if not isinstance(copy, Mapping) or not copy.get("group_id"):
        return None
    status, group = get(base + PATHS["group"] + quote(str(copy["group_id"]), safe=""), token)
    return group_copy_note(user, group if status == 200 and isinstance(group, dict) else None)


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
        return _failed(code, body, err, token)
    print(render(body, color=False, compact=True) if as_json else status_table(body), file=out)
    return 0


def worker_config(*, url: str, token: str, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`cs-relay config --url`: a running worker's settings (`GET /config`)."""
    from streams.settingsview import render

    out, err = out or sys.stdout, err or sys.stderr
    base = url.rstrip("/")
    try:
        code, body = get(base + "/config", token)
    except Unreachable as exc:
        print(f"error: {exc}", file=err)
        return 2
    if code != 200:
        return _failed(code, body, err, token)
    if as_json:
        print(json.dumps({"source": base, **body}, indent=2, ensure_ascii=False), file=out)
    else:
        print(
            render(body, f"The settings of the worker at {base}, as it read them from its environment at start-up"),
            file=out,
        )
    return 0
