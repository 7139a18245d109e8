"""Reading configuration from the environment: typed, validated, secrets kept secret.

Shared by the worker's `streams.settings.Settings` and each destination's own settings
(`streams/destinations/<name>/settings.py`). `EnvReader` reads one variable at a time;
a bad value raises `SettingsError` naming the variable. Credentials are `Secret`s, whose
`repr` and `str` never show the value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

ADMIN_TOKEN_MIN_CHARS = 16
T = TypeVar("T")


class SettingsError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Secret:
    """A credential. Its value is reachable only through `.reveal()`."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"


class EnvReader:
    """Typed reads of environment variables; every error names the variable (and never
    quotes a secret).

    By default the first bad value raises `SettingsError` (the worker stops at start-up
    naming it). With `collect=True` (`cs-relay config`) each bad value is recorded in
    `errors` instead and its default is used, so that every bad variable can be named."""

    def __init__(self, env: Mapping[str, str], *, collect: bool = False) -> None:
        self._env = env
        self._collect = collect
        self.errors: list[str] = []

    def fail(self, message: str, default: T) -> T:
        """Raise `SettingsError(message)`, or in collect mode record it and return `default`."""
        if not self._collect:
            raise SettingsError(message)
        self.errors.append(message)
        return default

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str, check: Callable[[str], str | None] | None = None) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if check is not None:
            problem = check(value)
            if problem:
                return self.fail(f"{name}: {problem} (got {value!r})", default)
        return value

    def secrets(self, name: str) -> tuple[Secret, ...]:
        """A comma-separated list of keys. Errors say which item is wrong, never its value."""
        value = self._raw(name)
        if value is None:
            return ()
        items = [item.strip() for item in value.split(",")]
        for number, item in enumerate(items, 1):
            if not item:
                return self.fail(f"{name}: key {number} of {len(items)} is empty (expected key[,key...])", ())
            if ":" in item or any(ch.isspace() or not ch.isprintable() for ch in item):
                return self.fail(f"{name}: key {number} of {len(items)} holds ':', a space or a control character", ())
        return tuple(Secret(item) for item in dict.fromkeys(items))

    def token(self, name: str) -> Secret:
        """A bearer token: at least ADMIN_TOKEN_MIN_CHARS printable characters without
        spaces. Errors never quote it."""
        value = self._raw(name)
        if value is None:
            return Secret("")
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            return self.fail(f"{name}: holds a space or a control character", Secret(""))
        if len(value) < ADMIN_TOKEN_MIN_CHARS:
            return self.fail(
                f"{name}: too short ({len(value)} characters; use at least {ADMIN_TOKEN_MIN_CHARS})", Secret("")
            )
        return Secret(value)

    def flag(self, name: str, default: bool) -> bool:
        """true/false, 1/0, yes/no, on/off (any case)."""
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in ("true", "1", "yes", "on"):
            return True
        if value.lower() in ("false", "0", "no", "off"):
            return False
        raise SettingsError(f"{name}: expected true or false (got {value!r})")

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            return self.fail(f"{name}: expected a whole number, got {value!r}", default)
        if not low <= number <= high:
            return self.fail(f"{name}: must be between {low} and {high}, got {number}", default)
        return number

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            return self.fail(f"{name}: expected a number, got {value!r}", default)
        if not low <= number <= high:
            return self.fail(f"{name}: must be between {low} and {high}, got {number}", default)
        return number


def http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "expected an http:// or https:// URL"
    if parts.username or parts.password:
        return "credentials do not belong in the URL; use the API key variable"
    return None


def http_url_or_empty(value: str) -> str | None:
    return http_url(value) if value else None
