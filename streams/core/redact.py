"""Keeping secrets out of text: logs, error messages, dead-letter headers."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
_QUERY_KEY = re.compile(r"(?i)(api_key|apikey|writeKey|token)=([^&\s\"']+)")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret, `api_key=` value and Authorization value masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _QUERY_KEY.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)} {MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's final message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
