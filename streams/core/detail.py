"""How a refusal's readable detail names a value the user gave: its JSON kind ("a
string", "an array") and a short, ASCII-safe quote. Shared by intake
(streams.core.segment, streams.core.validation) and the mapping files' checks, so every
error names values alike. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["json_kind", "preview", "short"]

_VALUE_PREVIEW = 40


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview(value: str) -> str:
    """A short, ASCII-safe quote of a user-given value for a detail message."""
    return short(ascii(value), _VALUE_PREVIEW)
