from datetime import UTC, datetime

import pytest

from loadorch.errors import BadInputError, ExitCode
from loadorch.schedule import cron


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * MON", _utc(2024, 1, 1, 3, 0), _utc(2024, 1, 8, 3, 0)),  # strictly after
        ("0 3 * * MON", _utc(2024, 1, 1, 2, 59), _utc(2024, 1, 1, 3, 0)),
        ("*/15 * * * *", _utc(2024, 1, 1, 10, 7, 30), _utc(2024, 1, 1, 10, 15)),
        ("@hourly", _utc(2024, 1, 1, 23, 30), _utc(2024, 1, 2, 0, 0)),
        ("@daily", _utc(2024, 12, 31, 12, 0), _utc(2025, 1, 1, 0, 0)),
        ("@weekly", _utc(2024, 1, 1), _utc(2024, 1, 7)),  # Sunday
        ("0 9-17/4 * * MON-FRI", _utc(2024, 1, 5, 17, 1), _utc(2024, 1, 8, 9, 0)),  # Fri -> Mon
        ("30 2 1,15 * *", _utc(2024, 1, 1, 3, 0), _utc(2024, 1, 15, 2, 30)),
        ("0 0 29 FEB *", _utc(2024, 3, 1), _utc(2028, 2, 29)),
        ("0 12 * JAN,JUL SUN", _utc(2024, 1, 29), _utc(2024, 7, 7, 12, 0)),
        ("0 3 * * 7", _utc(2024, 1, 1), _utc(2024, 1, 7, 3, 0)),  # 7 is Sunday too
        ("5/20 * * * *", _utc(2024, 1, 1, 0, 46), _utc(2024, 1, 1, 1, 5)),
    ],
)
def test_next_after_known_cases(expression: str, after: datetime, expected: datetime) -> None:
    assert cron.next_after(expression, after) == expected


def test_day_of_month_and_weekday_both_restricted_match_either() -> None:
    # Vixie cron: "the 13th OR a Friday"
    due = cron.due_times("0 0 13 * FRI", _utc(2024, 9, 1), _utc(2024, 9, 30))
    assert [d.day for d in due] == [6, 13, 20, 27]
    due = cron.due_times("0 0 13 * FRI", _utc(2024, 10, 1), _utc(2024, 10, 31))
    assert [d.day for d in due] == [4, 11, 13, 18, 25]


def test_naive_datetime_is_utc_and_a_time_zone_moves_the_wall_clock() -> None:
    assert cron.next_after("0 3 * * *", datetime(2024, 6, 1, 4)) == _utc(2024, 6, 2, 3)
    local = cron.next_after("0 3 * * *", _utc(2024, 6, 1, 1), "Europe/London")
    assert local.isoformat() == "2024-06-01T03:00:00+01:00"
    assert local.astimezone(UTC) == _utc(2024, 6, 1, 2)


def test_dst_gap_is_skipped_and_an_ambiguous_time_fires_once() -> None:
    # Europe/London 2024-03-31: 01:00 -> 02:00, so 01:30 does not exist that day
    assert cron.next_after("30 1 * * *", _utc(2024, 3, 30, 12), "Europe/London").day == 1
    # 2024-10-27: 01:30 happens twice; after the first one the next is the 28th
    first = cron.next_after("30 1 * * *", _utc(2024, 10, 26, 12), "Europe/London")
    assert first.astimezone(UTC) == _utc(2024, 10, 27, 0, 30)
    assert cron.next_after("30 1 * * *", first, "Europe/London").day == 28


@pytest.mark.parametrize(
    ("expression", "on_calendar"),
    [
        ("0 3 * * MON", "Mon *-*-* 03:00:00"),
        ("@daily", "*-*-* 00:00:00"),
        ("@hourly", "*-*-* *:00:00"),
        ("@weekly", "Sun *-*-* 00:00:00"),
        ("*/15 * * * *", "*-*-* *:00/15:00"),
        ("0 9-17 * * MON-FRI", "Mon..Fri *-*-* 09..17:00:00"),
        ("5 4 * * 5-7", "Fri..Sun *-*-* 04:05:00"),
        ("30 2 1,15 * *", "*-*-01,15 02:30:00"),
        ("0 12 * JAN,JUL SUN", "Sun *-01,07-* 12:00:00"),
        ("0 6 * * MON,WED", "Mon,Wed *-*-* 06:00:00"),
    ],
)
def test_to_on_calendar_known_cases(expression: str, on_calendar: str) -> None:
    assert cron.to_on_calendar(expression) == on_calendar


def test_on_calendar_time_zone_and_either_day_rule() -> None:
    assert cron.to_on_calendar("0 3 * * MON", "UTC") == "Mon *-*-* 03:00:00 UTC"
    assert cron.on_calendar_specs("0 0 13 * FRI") == ["*-*-13 00:00:00", "Fri *-*-* 00:00:00"]
    with pytest.raises(BadInputError, match="two OnCalendar= lines"):
        cron.to_on_calendar("0 0 13 * FRI")


@pytest.mark.parametrize(
    ("expression", "numeric"),
    [
        ("0 3 * * MON", "0 3 * * 1"),
        ("@weekly", "0 0 * * 0"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("5/20 1-23/2 * JAN-MAR *", "5-59/20 1-23/2 * 1-3 *"),
        ("0 0 1 * 0-6", "0 0 1 * 0-6"),  # stays restricted: it changes the either-day rule
    ],
)
def test_to_numeric_round_trips(expression: str, numeric: str) -> None:
    assert cron.to_numeric(expression) == numeric
    reparsed = cron.parse(numeric)
    original = cron.parse(expression)
    for attr in ("minutes", "hours", "days", "months", "weekdays", "days_restricted", "weekdays_restricted"):
        assert getattr(reparsed, attr) == getattr(original, attr)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "has 4 field(s), cron needs 5"),
        ("", "has 0 field(s)"),
        ("61 * * * *", "minute value 61 is out of range; valid: 0-59"),
        ("0 24 * * *", "hour value 24 is out of range; valid: 0-23"),
        ("0 0 0 * *", "day-of-month value 0 is out of range; valid: 1-31"),
        ("0 0 * FOO *", "month value 'FOO' is not valid; valid: 1-12 or JAN-DEC"),
        ("0 3 * * FUNDAY", "day-of-week value 'FUNDAY' is not valid; valid: 0-7 or MON-SUN"),
        ("*/0 * * * *", "minute step '0' must be a whole number >= 1"),
        ("5-1 * * * *", "minute range '5-1' runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("@sometimes", "unknown shorthand '@sometimes'; valid: @yearly"),
    ],
)
def test_errors_name_the_field_and_what_is_valid(expression: str, message: str) -> None:
    with pytest.raises(BadInputError) as info:
        cron.parse(expression)
    assert message in info.value.message
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert info.value.fix


def test_an_expression_that_never_comes_due_is_an_error() -> None:
    with pytest.raises(BadInputError, match="never comes due"):
        cron.next_after("0 0 30 FEB *", _utc(2024, 1, 1))


def test_due_times_lists_the_interval_and_stops_at_the_limit() -> None:
    due = cron.due_times("0 * * * *", _utc(2024, 1, 1, 5, 30), _utc(2024, 1, 1, 10, 0))
    assert [d.hour for d in due] == [6, 7, 8, 9, 10]
    assert len(cron.due_times("* * * * *", _utc(2024, 1, 1), _utc(2024, 2, 1), limit=50)) == 50
