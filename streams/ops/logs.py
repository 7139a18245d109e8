"""The worker's log lines: text (Faust's format) or JSON lines, never a secret.

`logging_config(settings)` is handed to Faust (`app.conf.logging_config`), which
applies it when the worker sets up logging. It replaces the worker's one log handler
with a `RedactingStreamHandler`: the existing `RedactingFilter` masks each record's
message, and the handler masks the whole formatted line again, so a secret in an
exception's traceback is masked too. With `CS_RELAY_LOG_FORMAT=json` every line is one
JSON object (`JsonFormatter`).

Caller text (messageIds, user ids, header values) goes into log lines. In text lines,
`RedactingStreamHandler` escapes control characters in the message (`escape_control`:
a newline becomes `\\n`, an escape character `\\x1b`), so a messageId holding a newline
cannot start a line of its own that looks like cs-relay's, nor move a terminal's cursor;
a traceback keeps its lines. JSON lines are escaped by JSON itself.

Start-up conditions: while a new consumer group's coordinator is being elected (a new
cluster, a new app id), aiokafka logs `[ERROR] Group Coordinator Request failed:
[Error 15] GroupCoordinatorNotAvailableError` and retries. `StartupNoise` turns such a
line into an INFO line saying so, for the first `STARTUP_GRACE` seconds of the process
only: a coordinator still missing after that is a real problem and stays an ERROR.

Event ids: a log line written while cs-relay works on an event carries that event's
`messageId` (`message_id` in JSON lines). The id comes from `bind_event_id()` /
`bind_event_raw()` (delivery tasks and dead letters bind the event they are about),
else from the event Faust's stream is processing (`faust.current_event()`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from streams.core.redact import RedactingFilter, redact

_EVENT_ID: ContextVar[str | None] = ContextVar("cs_relay_event_id", default=None)
# Scanning a record for its messageId is for log lines only: skip giant records.
PEEK_MAX_BYTES = 1024 * 1024


def bind_event_id(message_id: str | None) -> None:
    """Log lines of the current task (and tasks it starts) are about this event."""
    _EVENT_ID.set(message_id or None)


def bind_event_raw(raw: str | bytes | None) -> None:
    """Like `bind_event_id`, with the id read from a record's original bytes."""
    bind_event_id(message_id_of(raw))


def message_id_of(raw: str | bytes | bytearray | None) -> str | None:
    """The top-level `messageId` of a JSON record, or None (not JSON, no id, too big)."""
    if not raw or len(raw) > PEEK_MAX_BYTES:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    value = data.get("messageId") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def current_event_id() -> str | None:
    """The event the current log line is about, if any."""
    bound = _EVENT_ID.get()
    if bound is not None:
        return bound
    try:
        import faust

        event = faust.current_event()
    except Exception:  # outside a stream, or Faust not set up
        return None
    if event is None:
        return None
    value = getattr(event, "value", None)
    return message_id_of(value) if isinstance(value, (str, bytes, bytearray)) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, message_id, error."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage(), self._secrets),
        }
        message_id = current_event_id()
        if message_id is not None:
            line["message_id"] = message_id
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info), self._secrets)
        elif record.exc_text:
            line["error"] = redact(record.exc_text, self._secrets)
        return json.dumps(line, ensure_ascii=False, default=str)


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`,
    `\\u2028`), so that it stays on its line and does nothing to a terminal."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: _NAMED.get(m[0]) or _escape(m[0]), text)


def _escape(ch: str) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


class RedactingStreamHandler(logging.StreamHandler):
    """A stream handler whose every formatted line is masked of secrets (the message
    by `RedactingFilter`, the whole line, traceback included, once more here). In text
    lines the message's control characters are escaped (no log injection)."""

    def __init__(self, stream: TextIO | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__(stream)
        self._secrets = [s for s in secrets if s]
        self.addFilter(RedactingFilter(self._secrets))

    def format(self, record: logging.LogRecord) -> str:
        if not isinstance(self.formatter, JsonFormatter):
            record = _escaped(record)
        return redact(super().format(record), self._secrets)


def _escaped(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message's control characters escaped (a copy; the record
    itself is left to other handlers as it is)."""
    message = record.getMessage()
    safe = escape_control(message)
    if safe == message:
        return record
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg, copy.args = safe, ()  # not None: formatters such as mode's turn None into (None,)
    return copy


# aiokafka's logger of the group coordinator, and the answers it logs as errors that are
# normal while a group's coordinator is elected (it retries them).
COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
STARTUP_ERRORS = ("GroupCoordinatorNotAvailableError", "GroupLoadInProgressError", "NotCoordinatorForGroupError")
STARTUP_GRACE = 60.0


class StartupNoise(logging.Filter):
    """Demotes aiokafka's "Group Coordinator Request failed" ERROR for a coordinator not
    elected yet to INFO, with a note, during the first `grace` seconds after `started`
    (`time.monotonic()`); after that, and for any other error, records pass unchanged."""

    def __init__(self, grace: float = STARTUP_GRACE, started: float | None = None) -> None:
        super().__init__()
        self.until = (time.monotonic() if started is None else started) + grace

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or time.monotonic() > self.until:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != "Group Coordinator Request failed: %s" or not args:
            return True
        if type(args[0]).__name__ not in STARTUP_ERRORS:
            return True
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg = "Kafka has no coordinator for this consumer group yet (%s); normal at a first start, retrying"
        return True


def quiet_startup_noise(grace: float = STARTUP_GRACE) -> StartupNoise:
    """Install `StartupNoise` on aiokafka's coordinator logger (once per process)."""
    logger = logging.getLogger(COORDINATOR_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, StartupNoise):
            return existing
    noise = StartupNoise(grace)
    logger.addFilter(noise)
    return noise


def logging_config(*, level: str, log_format: str, secrets: Iterable[str]) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict that Faust's worker merges into its own
    (`merge`): the default handler becomes a `RedactingStreamHandler`, writing to
    stderr as Faust's does, in Faust's coloured text format or as JSON lines."""
    secrets = [s for s in secrets if s]
    return {
        "merge": True,
        "formatters": {"cs_relay_json": {"()": JsonFormatter, "secrets": secrets}},
        "handlers": {
            "default": {
                "()": RedactingStreamHandler,
                "stream": sys.stderr,
                "secrets": secrets,
                "level": level.upper(),
                "formatter": "cs_relay_json" if log_format == "json" else "colored",
            }
        },
    }
