"""Per-destination mapping controls (`CS_RELAY_MAPPINGS`, a TOML file; docs/mappings.md):
which events a destination gets, under which names, and how page and screen calls reach it.

Pure: `streams.core.mappingfile.load()` turns the file's text into `Controls` (or
`MappingError` listing every problem, each naming the file, line and key); `transform()` turns one message into the
message a destination decides on, or a `Skip`. The runtime wraps each destination's
`decide` with `bind()` (`streams/runtime/wiring.py`), so a held call re-decided later
meets the same rules.

Rules every destination takes: `allow`, `deny`, `rename`, `pages`, `screens`,
`aggregate` (validated by mappingfile; the windows are streams/core/aggregate.py) and
`consent` (the categories a call must grant: streams/core/consent.py, applied by the step). A
destination's own options (`Plugin.options`: a validator per key) are checked there and
kept in `DestinationControls.options`; `streams.settings` binds them into the
destination's settings, so its `decide` reads them as it reads any setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from streams.core.decision import Decision, Skip
from streams.core.message import Message

PAGES = ("per_page", "single", "off")
SCREENS = ("as_page", "as_event", "off")
SINGLE_PAGE_EVENT = "Page Viewed"
COMMON = ("allow", "deny", "rename", "pages", "screens", "aggregate", "consent")


@dataclass(frozen=True)
class DestinationControls:
    """One destination's table of the mapping file. The defaults are today's behaviour."""

    allow: tuple[str, ...] | None = None  # None: every event
    deny: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    pages: str = "per_page"
    screens: str | None = None  # None: the destination's own rule (ClientSuccess and CSB skip, the webhook sends)
    aggregate: int | None = None  # window in seconds; None: off
    consent: tuple[str, ...] = ()  # consent categories a call must grant (streams.core.consent)
    options: Mapping[str, Any] = field(default_factory=dict)  # the destination's own keys, validated


@dataclass(frozen=True)
class Controls:
    """The whole mapping file: the tables given, by destination key."""

    path: str = ""
    destinations: Mapping[str, DestinationControls] = field(default_factory=dict)

    def of(self, key: str) -> DestinationControls:
        return self.destinations.get(key) or DestinationControls()


# ----------------------------------------------------------------------------- transform


def event_name(msg: Message) -> str | None:
    """The name allow, deny and rename match: a track's event; a page as ClientSuccess
    names it (`Viewed {name} Page`, `Loaded a Page`); a screen `Viewed {name} Screen`
    (`Loaded a Screen`). identify, group and alias have none."""
    if msg.type == "track":
        return msg.event
    if msg.type == "page":
        return f"Viewed {msg.name} Page" if msg.name else "Loaded a Page"
    if msg.type == "screen":
        return f"Viewed {msg.name} Screen" if msg.name else "Loaded a Screen"
    return None


def transform(controls: DestinationControls, msg: Message) -> Message | Skip:
    """The message a destination decides on under `controls`, or why it gets nothing.

    1. screens: absent leaves screens to the destination; off skips them; as_page makes
       the screen a page call (then `pages` applies); as_event makes it a track
       `Viewed {name} Screen`.
    2. pages: per_page leaves the page a page; single makes it the track `Page Viewed`;
       off skips it.
    3. allow, then deny, match the event name (fnmatch globs, case-sensitive); a refused
       event is a `Skip`, counted in `skipped.<destination>`.
    4. rename (exact names) renames the event; a renamed page or screen is sent as a
       track of the new name.
    A page or screen that becomes a track keeps its properties, with its `name` (and
    `category`) added as properties unless they are already there."""
    if msg.type == "screen" and controls.screens is not None:
        if controls.screens == "off":
            return Skip('screen calls are off in the mapping file: screens = "off"')
        if controls.screens == "as_page":
            msg = _retyped(msg, "page")
        else:
            msg = as_track(msg, event_name(msg) or "")
    if msg.type == "page":
        if controls.pages == "off":
            return Skip('page calls are off in the mapping file: pages = "off"')
        if controls.pages == "single":
            msg = as_track(msg, SINGLE_PAGE_EVENT)
    name = event_name(msg)
    if name is None or msg.type == "screen" and controls.screens is None:
        return msg
    if controls.allow is not None and not any(fnmatchcase(name, p) for p in controls.allow):
        return Skip(f"{name!r} matches no allow pattern of the mapping file")
    for pattern in controls.deny:
        if fnmatchcase(name, pattern):
            return Skip(f"{name!r} matches the deny pattern {pattern!r} of the mapping file")
    new_name = controls.rename.get(name)
    if new_name is not None and new_name != name:
        msg = as_track(msg, new_name)
    return msg


def bind(controls: DestinationControls, decide: Callable[[Message, Any, Any], Decision]) -> Callable[..., Decision]:
    """`decide` behind the mapping rules: what the core's `Destination` calls."""
    if controls == DestinationControls():
        return decide  # no table for this destination: exactly today's behaviour

    def controlled(msg: Message, user: Any, groups: Any) -> Decision:
        mapped = transform(controls, msg)
        return mapped if isinstance(mapped, Skip) else decide(mapped, user, groups)

    return controlled


def as_track(msg: Message, event: str) -> Message:
    """`msg` as a track call named `event` (a page's or screen's name and category move
    into its properties when not already there)."""
    raw = {k: v for k, v in msg.raw.items() if msg.type == "track" or k not in ("name", "category")}
    if msg.type != "track":
        properties = dict(msg.properties)
        for key in ("name", "category"):
            if msg.raw.get(key) is not None:
                properties.setdefault(key, msg.raw[key])
        raw["properties"] = properties
    raw["type"] = "track"
    raw["event"] = event
    return replace(msg, type="track", raw=raw)


def _retyped(msg: Message, type_: str) -> Message:
    return replace(msg, type=type_, raw={**msg.raw, "type": type_})


def rename_traits(traits: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """`traits` with each key in `renames` renamed; a renamed trait replaces one that
    already has the new name. Order otherwise kept."""
    if not renames:
        return dict(traits)
    out: dict[str, Any] = {}
    for key, value in traits.items():
        if key in renames:
            continue
        out[key] = value
    for old, new in renames.items():
        if old in traits:
            out[new] = traits[old]
    return out
