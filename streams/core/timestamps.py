"""Timestamps as every partner receives them: UTC, ISO-8601, with an explicit offset.

Segment libraries send `timestamp` with any offset (`+02:00`, `-0500`, `Z`) or, from
some servers, none at all. A partner reading `2026-11-30T10:00:00` cannot know whose
10 o'clock it is, so every destination that forwards a time sends it through `utc_iso`:

- an offset is applied: `2026-11-30T10:00:00+02:00` -> `2026-11-30T08:00:00Z`;
- a time without an offset is read as UTC (as intake reads it: `segment.parse_timestamp`);
- the result always ends in `Z` (the zero offset, as the vendors' SDKs send it:
  csb-node's `new Date().toISOString()`), with seconds, and with milliseconds or
  microseconds only when the time has them (more than 6 fraction digits are cut).

Pure: no clock is read here; callers pass the moment they mean.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from streams.core.segment import parse_timestamp

__all__ = ["format_utc", "utc_date", "utc_iso"]


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


def utc_iso(value: str) -> str:
    """An ISO-8601 date-time (as intake accepts it) in UTC with a `Z`. Raises ValueError."""
    return format_utc(parse_timestamp(value))


def utc_date(value: str) -> date:
    """The GMT calendar date of an ISO-8601 date-time (no offset: UTC). Raises ValueError."""
    return parse_timestamp(value).astimezone(UTC).date()
