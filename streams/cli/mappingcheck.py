"""`cs-relay mappings check FILE`: validate a mapping file (docs/mappings.md) and show
what every registered destination would do with sample calls under it.

The samples go through the real core step and each destination's real `decide`,
wired as the worker wires them (`streams.runtime.wiring.destination`), with the demo
settings of each destination's mock and a sample user whose group is known (the
group call comes first). Every verdict says why: a request sent now, a call counted in
a window of `aggregate` and the one request its close sends, a call held or skipped
with the destination's reason. docs/mappings.md's examples are this command's output
(tests/test_mappings_docs.py runs them). Exit 0 valid, 1 with each problem (file:line,
key).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import unquote

from streams.core.aggregate import Fold, amount_of, window_start
from streams.core.decision import PartnerRequest
from streams.core.destination import Destination
from streams.core.mappingfile import MappingError, load_file
from streams.core.mappings import Controls, DestinationControls
from streams.core.outcome import Step
from streams.core.pending import Pending
from streams.core.segment import validate
from streams.core.state import GroupState, UserState
from streams.core.step import step
from streams.destinations import REGISTRY
from streams.envreader import EnvReader

USER = "sample-user"
GROUP = "sample-org"
NOW = 1_796_083_200.0  # 2026-12-01T00:00:00Z: the samples' clock, so the output is stable
NOW_ISO = "2026-12-01T00:00:00Z"
MAX_EVENTS = 12  # sample track names taken from the file, at most


def check(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        controls = load_file(path, {p.key: p.options for p in REGISTRY})
    except MappingError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=err)
        print(f"{len(exc.problems)} problem(s) in {path}", file=err)
        return 1
    print(f"{path}: valid", file=out)
    for key, table in controls.destinations.items():
        print(f"  [{key}] {summary(table)}", file=out)
    print(f"\nWhat each destination would do (user {USER!r}, whose group {GROUP!r} is known):", file=out)
    for call, outcomes in simulate(controls):
        print(f"\n{call}", file=out)
        width = max(len(key) for key in outcomes)
        for key, outcome in outcomes.items():
            print(f"  {key:<{width}}  {outcome}", file=out)
    return 0


def summary(table: DestinationControls) -> str:
    """One line for a destination's table: what differs from the defaults."""
    parts = []
    for field in dataclasses.fields(table):
        value = getattr(table, field.name)
        if field.name == "options" or value == field.default or value == {}:
            continue
        parts.append(f'{field.name} "{span(value)}"' if field.name == "aggregate" else f"{field.name} {_short(value)}")
    parts += [f"{name} {_short(value)}" for name, value in table.options.items()]
    return ", ".join(parts) or "as without the file"


def simulate(controls: Controls) -> list[tuple[str, dict[str, str]]]:
    """Each sample call and, per registered destination, what it would become."""
    wired = _destinations(controls)
    user: UserState | None = None
    pending = Pending()
    groups: dict[str, GroupState] = {}
    rows = []
    for number, raw in enumerate(samples(controls), 1):
        raw = {"userId": USER, "messageId": f"sample-{number}", "timestamp": NOW_ISO, **raw}
        msg = validate(dict(raw))
        result = step(
            USER,
            msg,
            "",
            {},
            user,
            pending,
            groups.get,
            wired,
            now=NOW,
            now_iso=NOW_ISO,
            max_pending=1000,
            max_pending_age=3600.0,
            memories=[p.memory for p in REGISTRY if p.memory],
        )
        user, pending = result.user, result.pending
        if result.group is not None:
            groups[result.group.group_id] = result.group
        rows.append((describe_call(raw), outcomes(result, msg.message_id, {d.key: d for d in wired})))
    return rows


def _destinations(controls: Controls) -> list[Destination]:
    from streams.runtime.wiring import destination

    wired = []
    for p in REGISTRY:
        own = p.read_settings(EnvReader(p.mock.demo_env))  # the demo credentials: enabled where they suffice
        options = controls.of(p.key).options
        wired.append(destination(p, dataclasses.replace(own, **options) if options else own, controls))
    return wired


def samples(controls: Controls) -> list[dict[str, Any]]:
    """The group call, an identify, a track for each event name the file names (a glob
    made concrete) and "Signed Up", a page and a screen."""
    traits = {"name": "Sample Org", "plan_name": "pro"}
    calls: list[dict[str, Any]] = [
        {"type": "group", "groupId": GROUP, "traits": traits},
        {"type": "identify", "traits": {"name": "Sam Ple", "email": "Sam@Example.com", "plan_name": "pro"}},
    ]
    names = dict.fromkeys(_example(p) for table in controls.destinations.values() for p in _named(table))
    names.pop("", None)
    for name in [*list(names)[:MAX_EVENTS], "Signed Up"]:
        if name.startswith(("Viewed ", "Loaded a ")) and name.endswith((" Page", " Screen")):
            continue  # a page's or screen's name: the page and screen below show them
        calls.append({"type": "track", "event": name, "properties": {"revenue": 42.5, "value": 2}})
    calls.append({"type": "page", "name": "Pricing", "properties": {"path": "/pricing"}})
    calls.append({"type": "screen", "name": "Home"})
    return [dict(c) for c in dict((repr(c), c) for c in calls).values()]


def _named(table: DestinationControls) -> Iterable[str]:
    yield from table.allow or ()
    yield from table.deny
    yield from table.rename


def _example(pattern: str) -> str:
    """An event name a glob matches ("Order *" -> "Order Example")."""
    text = re.sub(r"\[!?\]?[^\]]*\]", lambda m: _first_of_set(m.group(0)), pattern)
    return text.replace("*", "Example").replace("?", "X")


def _first_of_set(charset: str) -> str:
    inner = charset[1:-1]
    if inner.startswith("!"):
        return "Z" if "Z" not in inner else "z"
    return inner[:1]


def describe_call(raw: Mapping[str, Any]) -> str:
    type_ = raw["type"]
    if type_ == "track":
        return f'track "{raw["event"]}"'
    if type_ in ("page", "screen"):
        return f'{type_} "{raw["name"]}"'
    if type_ == "group":
        return f'group "{raw["groupId"]}" (traits: {", ".join(raw["traits"])})'
    return f"{type_} (traits: {', '.join(raw.get('traits', {}))})"


def outcomes(result: Step, message_id: str, wired: Mapping[str, Destination]) -> dict[str, str]:
    """Per registered destination, what becomes of the call, and why."""
    out: dict[str, str] = {}
    for dispatch in result.dispatches:
        if dispatch.message_id == message_id:
            out[dispatch.destination] = "sent as " + describe_request(dispatch.request)
            if wired[dispatch.destination].window is not None:  # aggregating, but not this request
                out[dispatch.destination] += " (now: `aggregate` does not count this kind of request)"
    for fold in result.folds:
        out[fold.destination] = describe_fold(fold, wired[fold.destination])
    for key, reason in result.skipped:
        out[key] = f"skipped ({reason})"
    for key, reason in result.held:
        out[key] = f"held ({reason})"
    for dead in result.dead_letters:
        if dead.destination:
            out[dead.destination] = f"dead-lettered ({dead.detail})"
    return {p.key: out.get(p.key) or _nothing(p.key, wired) for p in REGISTRY}


def _nothing(key: str, wired: Mapping[str, Destination]) -> str:
    if key not in wired:
        return "nothing (the destination is off: its mock's demo settings do not enable it)"
    return "nothing (its rule made no request for this call, and gave no reason)"


def describe_fold(fold: Fold, dest: Destination) -> str:
    """A call counted in a window of `aggregate`: which window, what it adds, and the one
    request the window's close sends (the destination's own closing request)."""
    assert dest.window is not None and dest.aggregation is not None, "only an aggregating destination folds"
    start = window_start(NOW, dest.window)
    amount = amount_of(fold.request, fold.field)
    closing = dest.aggregation.close(fold.request, amount, start, start + dest.window)
    body = fold.request.json
    name = (
        body.get("event") or body.get("featureId") or body.get("name") or unquote(fold.request.path.rsplit("/", 1)[-1])
    )
    sent = describe_request(closing).replace(f"{fold.field}={_short(amount)}", f"{fold.field}=(the window's sum)")
    return (
        f'counted in the {span(dest.window)} window of "{name}" (adds {fold.field} {_short(amount)}); '
        f"sent at the window's close as {sent}"
    )


def span(seconds: int) -> str:
    """A window's length as the mapping file writes it: "1h", "15m", "30s"."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe_request(request: PartnerRequest) -> str:
    """The request in a few words: its path and the body fields that name the event."""
    body = request.json
    words = [request.method, request.path or "(its URL)"]
    shown = ("event", "name", "featureId", "value", "total") if request.path else ("type", "event", "name")
    for field in shown:
        if field in body:
            words.append(f"{field}={_short(body[field])}")
    if isinstance(body.get("traits"), Mapping):
        words.append(f"traits: {', '.join(body['traits'])}")
    return " ".join(words)


def _short(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f'"{k}" = "{v}"' for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)
