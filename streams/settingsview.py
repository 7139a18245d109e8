"""The settings as `cs-relay config` shows them: by the environment variable that sets
each one, with every destination marked on or off.

`document(env)` reads the configuration exactly as `Settings.from_env` does, through a
`RecordingReader` that notes each variable as it is read (its effective value, and
whether the environment set it), so the list of variables comes from the code that
reads them, destinations' included. Secrets are `***` (set) or empty (unset): by
name (a `Secret` read, a destination's secret variable, `KAFKA_SASL_PASSWORD`) and by
value (any value holding a secret in use is masked). The worker serves the document of
its own environment, as it read it at start-up, at `GET /config` (`streams.ops.admin`);
`cs-relay config --url` shows it. `render(doc, whose)` is the text form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from streams.core.redact import redact
from streams.destinations import REGISTRY
from streams.envreader import EnvReader, Secret, SettingsError
from streams.kafkaconn import PASSWORD
from streams.settings import Settings

SECRET_VARIABLES = frozenset({PASSWORD, *(v.name for p in REGISTRY for v in p.variables if v.secret)})
MASK = "***"


class RecordingReader(EnvReader):
    """An `EnvReader` that keeps, for each variable read, its effective value (the
    default when unset or bad) and whether the environment sets it."""

    def __init__(self, env: Mapping[str, str], *, collect: bool = False) -> None:
        super().__init__(env, collect=collect)
        self.seen: dict[str, dict[str, Any]] = {}

    def _note(self, name: str, value: Any, *, secret: bool = False) -> None:
        if name not in self.seen:  # a variable read twice (a check) keeps its first entry
            self.seen[name] = {"value": value, "set": self._raw(name) is not None, "secret": secret}

    def text(self, name: str, default: str, check: Callable[[str], str | None] | None = None) -> str:
        value = super().text(name, default, check)
        self._note(name, value, secret=name in SECRET_VARIABLES)
        return value

    def secrets(self, name: str) -> tuple[Secret, ...]:
        value = super().secrets(name)
        self._note(name, MASK if value else "", secret=True)
        return value

    def token(self, name: str) -> Secret:
        value = super().token(name)
        self._note(name, MASK if value else "", secret=True)
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = super().flag(name, default)
        self._note(name, value)
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = super().integer(name, default, low=low, high=high)
        self._note(name, value)
        return value

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = super().number(name, default, low=low, high=high)
        self._note(name, int(value) if float(value).is_integer() else value)
        return value


def document(env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The settings of `env` (default: this process's environment) as plain data, and
    every problem found (empty when the settings are valid)."""
    reader = RecordingReader(os.environ if env is None else env, collect=True)
    problems: list[str] = []
    try:
        settings = Settings.from_reader(reader)
    except SettingsError as exc:  # a check across variables, after the others were read
        problems.append(str(exc))
        settings = Settings()
    problems = reader.errors + problems
    secrets = settings.secrets()
    variables = {}
    for name, entry in sorted(reader.seen.items()):
        value = entry["value"]
        if entry["secret"]:
            value = MASK if value else ""
        elif isinstance(value, str):
            value = redact(value, secrets)
        variables[name] = {"value": value, "set": entry["set"]}
    destinations = {}
    for p in REGISTRY:
        own = settings.destinations[p.key]
        options = settings.mappings.of(p.key).options
        destinations[p.key] = {
            "name": p.name,
            "enabled": bool(own.enabled),
            **({} if own.enabled else {"to_enable": p.enable_hint}),
            **({"mapping_options": _plain(options)} if options else {}),
        }
    return {"destinations": destinations, "variables": variables}, problems


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def render(doc: Mapping[str, Any], whose: str) -> str:
    """The document as text: whose settings, the destinations on or off, then one
    `VARIABLE = value` line per variable ("(default)": the environment does not set it;
    "(unset)": neither does the default)."""
    lines = [f"# {whose}", "# (default): not set, the default applies; secrets are shown as ***", "", "destinations:"]
    dests = doc.get("destinations", {})
    width = max((len(d["name"]) for d in dests.values()), default=0)
    for key, dest in dests.items():
        state = "on" if dest["enabled"] else f"off ({dest.get('to_enable', 'not configured')})"
        lines.append(f"  {dest['name']:<{width}}  {state}")
        for option, value in (dest.get("mapping_options") or {}).items():
            lines.append(f"  {'':<{width}}  {option} = {_text(value)} (from the mapping file, [{key}])")
    lines += ["", "variables:"]
    for name, entry in doc.get("variables", {}).items():
        if entry["value"] == "":
            lines.append(f"{name} = (unset)")
        else:
            lines.append(f"{name} = {_text(entry['value'])}" + ("" if entry["set"] else "  (default)"))
    return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)
