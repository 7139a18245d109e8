"""Timestamp normalisation (streams/core/timestamps.py): what every partner receives."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streams.core import timestamps
from streams.core.timestamps import format_utc, utc_date, utc_iso


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-30T10:20:30+02:00", "2026-11-30T08:20:30Z"),
        ("2026-11-30T10:20:30-0530", "2026-11-30T15:50:30Z"),
        ("2026-11-30T10:20:30+00:00", "2026-11-30T10:20:30Z"),
        ("2026-11-30T10:20:30Z", "2026-11-30T10:20:30Z"),
        ("2026-11-30T10:20Z", "2026-11-30T10:20:00Z"),
        ("2026-11-30T10:20:30", "2026-11-30T10:20:30Z"),  # naive: read as UTC
        ("2026-11-30T10:20:30.1Z", "2026-11-30T10:20:30.100Z"),
        ("2026-11-30T10:20:30.123Z", "2026-11-30T10:20:30.123Z"),
        ("2026-11-30T10:20:30.000Z", "2026-11-30T10:20:30Z"),
        ("2026-11-30T10:20:30.123456+01:00", "2026-11-30T09:20:30.123456Z"),
        ("2026-11-30T10:20:30.1234567891Z", "2026-11-30T10:20:30.123456Z"),  # beyond microseconds: cut
        ("2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00Z"),  # the offset crosses a year
    ],
)
def test_utc_iso(value, expected):
    assert utc_iso(value) == expected


@pytest.mark.parametrize("value", ["", "2026-11-30", "30/11/2026 10:00", "2026-11-30T10:20:30+25:00", "now"])
def test_utc_iso_refuses_what_intake_refuses(value):
    with pytest.raises(ValueError):
        utc_iso(value)


def test_format_utc_converts_aware_and_reads_naive_as_utc():
    aware = datetime(2026, 11, 30, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert format_utc(aware) == "2026-11-29T22:00:00Z"
    assert format_utc(datetime(2026, 11, 30, 1, 0, 0, 5)) == "2026-11-30T01:00:00.000005Z"


@pytest.mark.parametrize(
    "value, day",
    [
        ("2026-11-30T00:30:00+01:00", date(2026, 11, 29)),
        ("2026-11-29T23:30:00-01:00", date(2026, 11, 30)),
        ("2026-11-30T23:59:59.999999", date(2026, 11, 30)),
    ],
)
def test_utc_date_is_the_gmt_calendar_date(value, day):
    assert utc_date(value) == day


# The form `format_utc` writes, and strings near it: the fast reading of that form
# (`datetime.fromisoformat`) gives what the general parser gives, or the same error.
NEAR_UTC_FORM = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?(Z|\+00:00)?\Z", fullmatch=True
)


def _general(value: str) -> tuple[str, object]:
    try:
        return "ok", timestamps._parse(value)
    except ValueError as exc:
        return "error", str(exc)


def _fast(value: str) -> tuple[str, object]:
    try:
        return "ok", timestamps.parse_timestamp(value)
    except ValueError as exc:
        return "error", str(exc)


@given(st.one_of(NEAR_UTC_FORM, st.datetimes(timezones=st.just(UTC)).map(format_utc)))
@example("2026-02-30T10:20:30Z")  # a day February has not
@example("0000-01-01T00:00:00.000Z")
@example("2026-11-30T24:00:00Z")
@example("2026-11-30T10:20:30.123000Z")
@example("2026-11-30T10:20:30.000Z")
def test_the_utc_form_is_read_as_the_general_parser_reads_it(value):
    assert _fast(value) == _general(value)
    if _general(value)[0] == "ok":
        assert utc_iso(value) == format_utc(timestamps._parse(value))
        assert timestamps.read_timestamp(value) == (timestamps._parse(value), utc_iso(value))
        assert utc_date(value) == timestamps._parse(value).date()
