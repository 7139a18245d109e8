"""Timestamps as intake reads them (`parse_timestamp`) and as every partner receives
them: UTC, ISO-8601, with an explicit offset.

Segment libraries send `timestamp` with any offset (`+02:00`, `-0500`, `Z`) or, from
some servers, none at all. A partner reading `2026-11-30T10:00:00` cannot know whose
10 o'clock it is, so every destination that forwards a time sends it through `utc_iso`:

- an offset is applied: `2026-11-30T10:00:00+02:00` -> `2026-11-30T08:00:00Z`;
- a time without an offset is read as UTC (as intake reads it: `parse_timestamp`);
- the result always ends in `Z` (the zero offset, as the vendors' SDKs send it:
  csb-node's `new Date().toISOString()`), with seconds, and with milliseconds or
  microseconds only when the time has them (more than 6 fraction digits are cut).

Pure: no clock is read here; callers pass the moment they mean.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

from streams.core.detail import preview

__all__ = ["format_utc", "parse_timestamp", "read_timestamp", "utc_date", "utc_iso"]


_TIMESTAMP = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<off_hour>\d{2})(?::?(?P<off_minute>\d{2}))?)?",
    re.ASCII,
)


# What `format_utc` writes (seconds, 3 or 6 fraction digits, `Z`), as JavaScript's
# `toISOString()` and most Segment libraries send it: read by `datetime.fromisoformat`
# (a few times faster than the pattern above; every call of a track reads its
# timestamp three or four times: intake, ClientSuccess, CustomerSuccessBox). The fields'
# ranges are checked here so that no Python version's reading of, say, hour 24 differs.
_UTC_FORM = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{3}|\.\d{6})?Z",
    re.ASCII,
)


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 date-time such as Segment's libraries send:
    `2024-05-01T10:20:30Z`, `...30.123Z`, `...30.123456+02:00`, `...30-0500`, `T10:20Z`.
    Any number of fraction digits is accepted (cut to microseconds). A time without an
    offset is taken as UTC. Dates without a time, week or ordinal dates and other
    separators are refused. Always returns an aware datetime. Raises ValueError."""
    if type(value) is str and _UTC_FORM.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # a day the month does not have, year 0: said below as for any other form
    return _parse(value)


def _parse(value: str) -> datetime:
    """`parse_timestamp` of any form it accepts."""
    if not isinstance(value, str):
        raise ValueError(f"a timestamp must be a string, not {type(value).__name__}")
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        raise ValueError(f"not an ISO-8601 date-time: {preview(value)}")
    if m["z"] or not m["sign"]:
        tz = UTC
    else:
        off_hour, off_minute = int(m["off_hour"]), int(m["off_minute"] or 0)
        if off_hour > 23 or off_minute > 59:
            raise ValueError(f"UTC offset out of range: {preview(value)}")
        offset = timedelta(hours=off_hour, minutes=off_minute)
        tz = timezone(-offset if m["sign"] == "-" else offset)
    fraction = (m["fraction"] or "")[:6].ljust(6, "0")
    return datetime(
        int(m["year"]),
        int(m["month"]),
        int(m["day"]),
        int(m["hour"]),
        int(m["minute"]),
        int(m["second"] or 0),
        int(fraction),
        tzinfo=tz,
    )


def format_utc(moment: datetime) -> str:
    """`moment` as `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z`; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if moment.microsecond == 0:
        spec = "seconds"
    elif moment.microsecond % 1000 == 0:
        spec = "milliseconds"
    else:
        spec = "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def read_timestamp(value: str) -> tuple[datetime, str]:
    """`parse_timestamp(value)` and `utc_iso(value)` at once: the moment, and the text
    every partner receives (read once per message: `streams.core.message.Message`).
    Raises ValueError."""
    if type(value) is str and _UTC_FORM.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass  # a day the month does not have, year 0: said below as for any other form
        else:
            # In that form already format_utc writes it as it is, but for a fraction
            # ending in 000 (`.000Z` and `.120000Z` are written shorter).
            return moment, (format_utc(moment) if value.endswith("000Z") else value)
    moment = _parse(value)
    return moment, format_utc(moment)


def utc_iso(value: str) -> str:
    """An ISO-8601 date-time (as intake accepts it) in UTC with a `Z`. Raises ValueError."""
    return read_timestamp(value)[1]


def utc_date(value: str) -> date:
    """The GMT calendar date of an ISO-8601 date-time (no offset: UTC). Raises ValueError."""
    return parse_timestamp(value).astimezone(UTC).date()
