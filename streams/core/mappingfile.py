"""Reading the mapping file (`CS_RELAY_MAPPINGS`, TOML; docs/mappings.md): `load()` turns
its text into `streams.core.mappings.Controls`, or raises `MappingError` listing every
problem, each naming the file, line and key. The validators here also check the options
a destination declares (`Plugin.options`). Pure: `load_file` only reads the file."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from streams.core.detail import json_kind
from streams.core.mappings import COMMON, PAGES, SCREENS, Controls, DestinationControls

DAY = 24 * 3600
_DURATION = re.compile(r"([1-9][0-9]*)([smh])")
_UNIT = {"s": 1, "m": 60, "h": 3600}

# A destination's own option: the raw TOML value in, the value its settings field takes
# out; a ValueError's message says what was expected.
Validator = Callable[[Any], Any]


class MappingError(ValueError):
    """The mapping file is not valid; `problems` holds one line per problem, each
    `file:line: [destination] key: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ----------------------------------------------------------------------------- validators


def string_table(value: Any) -> dict[str, str]:
    """A table of name to non-empty new name, no two names to the same new name."""
    if not isinstance(value, dict):
        raise ValueError(f'expected a table of name to new name, such as {{ "a" = "b" }}, not {_kind(value)}')
    targets: dict[str, str] = {}
    for old, new in value.items():
        if not isinstance(new, str) or not new.strip():
            raise ValueError(f"{old!r}: expected a non-empty string as its new name, not {_kind(new)}")
        if new in targets:
            raise ValueError(f"{old!r} and {targets[new]!r} are both renamed to {new!r}")
        targets[new] = old
    return dict(value)


def non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = repr(value) if isinstance(value, str) else _kind(value)
        raise ValueError(f"expected a non-empty string, not {shown}")
    return value


def categories(value: Any) -> tuple[str, ...]:
    """Consent categories (streams.core.consent): a list of non-empty names, each once."""
    if not isinstance(value, list) or not value:
        raise ValueError(f'expected a list of consent categories, such as ["analytics"], not {_show(value)}')
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"expected each category as a non-empty string, not {_show(item)}")
    if len(set(value)) != len(value):
        raise ValueError("a category is named twice")
    return tuple(value)


def patterns(value: Any) -> tuple[str, ...]:
    """A list of event names or fnmatch globs (`*`, `?`, `[abc]`)."""
    if not isinstance(value, list):
        raise ValueError(f'expected a list of event names or patterns, such as ["Order *"], not {_kind(value)}')
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected event names or patterns as strings, not {_kind(item)}")
        problem = glob_problem(item)
        if problem:
            raise ValueError(f"{item!r} is not a valid pattern: {problem}")
    return tuple(value)


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable glob, or None."""
    if not pattern.strip():
        return "it is empty"
    if pattern != pattern.strip():
        return "it starts or ends with a space"
    i, n = 0, len(pattern)
    while i < n:  # fnmatch's own reading of a character set: [!...], a leading ] is literal
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                return "'[' opens a character set that no ']' closes"
            i = j
        i += 1
    return None


def choice(allowed: tuple[str, ...]) -> Validator:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected {_one_of(allowed)}, not {_show(value)}")
        return value

    return check


def duration(value: Any) -> int | None:
    """`off`, or a window such as "30s", "15m", "1h" that divides a day evenly (so no
    window crosses a GMT midnight): its length in seconds."""
    if value == "off":
        return None
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected "off" or a duration such as "30s", "15m" or "1h", not {_show(value)}')
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds > DAY or DAY % seconds:
        raise ValueError(
            f"{value!r} does not divide a day evenly (so a window would cross a GMT midnight); "
            "use e.g. 30s, 15m, 1h, 4h or 24h"
        )
    return seconds


_COMMON_VALIDATORS: dict[str, Validator] = {
    "allow": patterns,
    "deny": patterns,
    "rename": string_table,
    "pages": choice(PAGES),
    "screens": choice(SCREENS),
    "aggregate": duration,
    "consent": categories,
}


# ----------------------------------------------------------------------------- loading


def load(text: str, path: str, options: Mapping[str, Mapping[str, Validator]]) -> Controls:
    """The controls of a mapping file's `text`. `options` names every destination key
    and the keys of its own options. Raises `MappingError` listing every problem."""
    lines = Lines(text, path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError([f"{lines.at(_toml_line(exc))}: not valid TOML: {_toml_message(exc)}"]) from None
    problems: list[str] = []
    tables: dict[str, DestinationControls] = {}
    known = ", ".join(options)
    for key, table in document.items():
        if not isinstance(table, dict):
            where = (
                f"expected a table [{key}]"
                if key in options
                else (f"a key outside any destination's table (tables: {', '.join(f'[{k}]' for k in options)})")
            )
            problems.append(f"{lines.table(key)}: {key}: {where}, not {_kind(table)}")
            continue
        if key not in options:
            problems.append(f"{lines.table(key)}: [{key}]: unknown destination (known: {known})")
            continue
        own = options[key]
        values: dict[str, Any] = {}
        chosen: dict[str, Any] = {}
        for name, value in table.items():
            validator = _COMMON_VALIDATORS.get(name) or own.get(name)
            if validator is None:
                accepted = ", ".join((*COMMON, *own))
                problems.append(f"{lines.key(key, name)}: [{key}] {name}: unknown option (accepted: {accepted})")
                continue
            try:
                checked = validator(value)
            except ValueError as exc:
                problems.append(f"{lines.key(key, name)}: [{key}] {name}: {exc}")
                continue
            (values if name in COMMON else chosen)[name] = checked
        tables[key] = DestinationControls(**values, options=chosen)
    if problems:
        raise MappingError(problems)
    return Controls(path, tables)


def load_file(path: str, options: Mapping[str, Mapping[str, Validator]]) -> Controls:
    """`load()` of the file at `path`; a file that cannot be read is a `MappingError` too."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise MappingError([f"{path}: cannot read the mapping file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MappingError([f"{path}:{line}: not UTF-8 text"]) from None
    return load(text, path, options)


class Lines:
    """Where a table or key is written: tomllib reports no positions for keys, so the
    text is scanned for the table's header (or a dotted key) and the key's line in it."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def at(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line else self.path

    def _header(self, table: str) -> int | None:
        for number, line in enumerate(self.lines, 1):
            stripped = _uncommented(line)
            if stripped.startswith("["):
                if _name_parts(stripped[1 : stripped.find("]")])[:1] == [table]:
                    return number
            elif "=" in stripped and _name_parts(stripped.split("=", 1)[0])[:1] == [table]:
                return number  # a dotted key or an inline table at the top level
        return None

    def table(self, table: str) -> str:
        return self.at(self._header(table))

    def key(self, table: str, key: str) -> str:
        """The line of `key` in `table` (its header's when the key is not found)."""
        start = self._header(table)
        if start is None:
            return self.at(None)
        inside = False  # below [table]
        for number in range(start, len(self.lines) + 1):
            stripped = _uncommented(self.lines[number - 1])
            if stripped.startswith("["):
                parts = _name_parts(stripped[1 : stripped.find("]")])
                if parts[:2] == [table, key]:
                    return self.at(number)  # [table.key] as a sub-table
                inside = parts == [table]
                continue
            if "=" not in stripped:
                continue
            left, right = stripped.split("=", 1)
            parts = _name_parts(left)
            if inside and parts[:1] == [key] or not inside and parts[:2] == [table, key]:
                return self.at(number)
            if not inside and parts == [table] and re.search(rf'(^|[{{,\s"\']){re.escape(key)}["\']?\s*[=.]', right):
                return self.at(number)  # table = { key = ... } inline
        return self.at(start)


def _uncommented(line: str) -> str:
    """The line without a trailing comment (outside quotes), stripped."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index].strip()
    return line.strip()


def _name_parts(name: str) -> list[str]:
    """The parts of a (possibly dotted, possibly quoted) TOML key."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', name)
    return [a or b or c for a, b, c in parts]


def _toml_line(exc: tomllib.TOMLDecodeError) -> int | None:
    match = re.search(r"at line (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _toml_message(exc: tomllib.TOMLDecodeError) -> str:
    return re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "syntax error"


def _one_of(allowed: tuple[str, ...]) -> str:
    quoted = [f'"{a}"' for a in allowed]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _kind(value)


def _kind(value: Any) -> str:
    """A TOML value's kind in TOML's words (lists and tables; dates and times by type)."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a table"
    kind = json_kind(value)
    return kind if kind.startswith("a") else f"a {kind}"
