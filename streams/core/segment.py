"""Segment spec messages in: a Kafka record's bytes (`parse`) or an object already
decoded (`validate`, the HTTP ingest) to a `streams.core.message.Message`, or an
`InvalidMessage` with a stable machine-readable `Reason` (the dead-letter reason) and a
short readable `detail` naming the offending field. Nothing here does I/O.

Here, the checks of the record as a whole, in the order they are made (the first
failure wins):

- the record is at most `MAX_MESSAGE_BYTES` bytes (OVERSIZED), checked before decoding;
- it is UTF-8 (NOT_UTF8) and JSON (INVALID_JSON; NaN/Infinity, numbers that overflow a
  float and strings holding an unpaired UTF-16 surrogate escape are refused too);
- containers nest at most `MAX_DEPTH` levels (TOO_DEEP);
- the top level is an object (NOT_AN_OBJECT);

then the rules of its fields (streams.core.validation.check_fields).

Unknown extra fields are kept untouched in `Message.raw`; the only change ever made to
the decoded object is filling in a derived `messageId`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from streams.core.detail import json_kind, short
from streams.core.message import InvalidMessage, Message
from streams.core.reasons import Reason  # intake's reasons: streams.core.reasons.INTAKE
from streams.core.validation import check_fields

__all__ = [
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "parse",
    "validate",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_DEPTH = 64


# --------------------------------------------------------------------------- entry points


def parse(data: bytes | bytearray | memoryview | str) -> Message:
    """Parse and validate one Kafka record value. Raises InvalidMessage."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMessage(Reason.NOT_UTF8, f"text is not valid Unicode at position {exc.start}") from None
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            Reason.OVERSIZED, f"message is {len(data)} bytes, more than the limit of {MAX_MESSAGE_BYTES}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            Reason.NOT_UTF8, f"message is not UTF-8: byte 0x{data[exc.start]:02x} at position {exc.start}"
        ) from None
    surrogates_possible = _SURROGATE_ESCAPE.search(text) is not None
    brackets = text.count("{") + text.count("[")
    return _validate_decoded(_loads(text), surrogates_possible=surrogates_possible, brackets=brackets)


def validate(obj: object) -> Message:
    """Validate an already-decoded message by the same rules as `parse` (the size limit
    applies to its compact JSON encoding). The caller's object is never modified: the
    Message holds a fresh copy."""
    if isinstance(obj, Mapping) and not isinstance(obj, dict):
        obj = dict(obj)
    if not isinstance(obj, dict):
        raise InvalidMessage(Reason.NOT_AN_OBJECT, f"a message must be a JSON object, not {json_kind(obj)}")
    try:
        text = _dumps(obj)
    except RecursionError:
        raise InvalidMessage(Reason.TOO_DEEP, f"message nests deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(Reason.INVALID_JSON, f"message is not JSON-compatible: {short(str(exc), 120)}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMessage(Reason.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate") from None
    if size > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            Reason.OVERSIZED, f"message is {size} bytes as JSON, more than the limit of {MAX_MESSAGE_BYTES}"
        )
    return _validate_decoded(_loads(text), surrogates_possible=False, brackets=text.count("{") + text.count("["))


# --------------------------------------------------------------------------- internals


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large for a float")
    return value


# json.loads with these hooks, without building a decoder (and its scanner) per message.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _loads(text: str) -> Any:
    try:
        if text.startswith("\ufeff"):  # json.loads's own refusal of a BOM, in its words
            return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        return _DECODER.decode(text)
    except RecursionError:
        raise InvalidMessage(Reason.TOO_DEEP, f"message nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, our hooks, int digit limit
        raise InvalidMessage(Reason.INVALID_JSON, f"message is not valid JSON: {short(str(exc), 120)}") from None


# Only a \uD800-\uDFFF escape can put a lone surrogate into text decoded from UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_structure(obj: Any, surrogates_possible: bool) -> None:
    """Nesting depth (iteratively) and, when the text had surrogate escapes, unpaired
    surrogates in keys and strings."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidMessage(Reason.TOO_DEEP, f"message nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if surrogates_possible and any(_SURROGATE.search(k) for k in node):
                raise InvalidMessage(Reason.INVALID_JSON, "a key holds an unpaired UTF-16 surrogate escape")
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif surrogates_possible and isinstance(child, str) and _SURROGATE.search(child):
                raise InvalidMessage(Reason.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate escape")


def _validate_decoded(obj: Any, *, surrogates_possible: bool, brackets: int | None = None) -> Message:
    """`brackets`: how many `{` and `[` the JSON text holds, where known. Containers
    cannot nest deeper than that (each opens with one; a bracket in a string only adds
    to the count), so with no surrogate escape to look for and no more than MAX_DEPTH
    of them the walk of every container finds nothing (most calls: a few objects)."""
    if isinstance(obj, (dict, list)) and (surrogates_possible or brackets is None or brackets > MAX_DEPTH):
        _check_structure(obj, surrogates_possible)
    elif surrogates_possible and isinstance(obj, str) and _SURROGATE.search(obj):
        raise InvalidMessage(Reason.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate escape")
    if not isinstance(obj, dict):
        raise InvalidMessage(Reason.NOT_AN_OBJECT, f"a message must be a JSON object, not {json_kind(obj)}")
    return check_fields(obj)
