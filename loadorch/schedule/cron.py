"""Cron expressions (pure): parse, find the next due time, translate for systemd and CI.

A cron expression has five fields: minute hour day-of-month month day-of-week.
Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a
comma list of those. Months take JAN-DEC, weekdays MON-SUN (0 and 7 are both
Sunday). `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly`
(`@annually`) are shorthands.

As in Vixie cron, when both day-of-month and day-of-week are restricted (neither
starts with `*`), a day matches if EITHER matches; otherwise both must.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loadorch.errors import BadInputError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# systemd spells weekdays Mon..Sun; cron's 0 (and 7) is Sunday
SYSTEMD_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
SYSTEMD_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)

# a due time must turn up within this many years (Feb 29 needs up to 8: 2096 -> 2104)
SEARCH_YEARS = 9


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0

    def valid(self) -> str:
        text = f"{self.low}-{self.high}"
        if self.names:
            text += f" or {self.names[0]}-{self.names[-1]}"
        return text


FIELDS = (
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day-of-month", 1, 31),
    _FieldSpec("month", 1, 12, MONTHS, 1),
    _FieldSpec("day-of-week", 0, 7, ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"), 1),
)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the set of allowed values of each field."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays


def _error(expression: str, message: str, fix: str | None = None) -> BadInputError:
    return BadInputError(
        f"cron expression {expression!r}: {message}",
        fix=fix or "use five fields `minute hour day-of-month month day-of-week`, e.g. '0 3 * * MON'",
    )


def _value(expression: str, spec: _FieldSpec, text: str) -> int:
    upper = text.upper()
    if spec.names and upper in spec.names:
        return spec.names.index(upper) + spec.name_base
    if spec.name == "day-of-week" and upper in WEEKDAYS:
        return WEEKDAYS.index(upper)
    if not text.isdigit():
        raise _error(expression, f"{spec.name} value {text!r} is not valid; valid: {spec.valid()}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise _error(expression, f"{spec.name} value {value} is out of range; valid: {spec.valid()}")
    return value


def _parse_field(expression: str, spec: _FieldSpec, text: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _error(expression, f"{spec.name} field {text!r} has an empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _error(expression, f"{spec.name} step {step_text!r} must be a whole number >= 1")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(expression, spec, first), _value(expression, spec, last)
            if low > high:
                raise _error(expression, f"{spec.name} range {base!r} runs backwards; write it low-high")
        else:
            low = _value(expression, spec, base)
            # `a/n` means from a to the end of the field in steps of n
            high = spec.high if step_text else low
        values.update(range(low, high + 1, step))
    if spec.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def parse(expression: str) -> CronSchedule:
    """Parse a cron expression; errors say which field is wrong and what is valid."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise _error(expression, f"unknown shorthand {text!r}; valid: {', '.join(MACROS)}")
        text = MACROS[text.lower()]
    parts = text.split(" ")
    if len(parts) != 5:
        raise _error(expression, f"has {len(parts) if text else 0} field(s), cron needs 5")
    sets = [_parse_field(expression, spec, part) for spec, part in zip(FIELDS, parts, strict=True)]
    return CronSchedule(
        expression=expression.strip(),
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=sets[4],
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
    )


def zone(name: str | None) -> tzinfo:
    """A time zone by IANA name; None or 'UTC' is UTC."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadInputError(
            f"unknown time zone {name!r}", fix="use an IANA name such as UTC or Europe/London"
        ) from exc


def next_after(expression: str | CronSchedule, after: datetime, tz: str | tzinfo | None = None) -> datetime:
    """The first due time strictly after `after`, evaluated on the wall clock of `tz` (default UTC).

    A naive `after` is taken as UTC. The result is aware, in `tz`. A wall-clock time
    that does not exist (a DST gap) is skipped; an ambiguous one fires once (its
    first occurrence).
    """
    schedule = expression if isinstance(expression, CronSchedule) else parse(expression)
    zone_info = tz if isinstance(tz, tzinfo) else zone(tz)
    if after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    local = after.astimezone(zone_info).replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
    limit = local + timedelta(days=366 * SEARCH_YEARS)
    while local < limit:
        if not schedule.matches_day(local):
            local = local.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if local.hour not in schedule.hours:
            local = local.replace(minute=0) + timedelta(hours=1)
            continue
        if local.minute not in schedule.minutes:
            local += timedelta(minutes=1)
            continue
        candidate = local.replace(tzinfo=zone_info, fold=0)
        round_trip = candidate.astimezone(UTC).astimezone(zone_info).replace(tzinfo=None)
        if round_trip == local and candidate > after:
            return candidate
        local += timedelta(minutes=1)
    raise _error(
        schedule.expression,
        f"never comes due (no match within {SEARCH_YEARS} years)",
        fix="check the day-of-month against the month, e.g. there is no 30 FEB",
    )


def due_times(
    expression: str | CronSchedule,
    after: datetime,
    until: datetime,
    tz: str | tzinfo | None = None,
    *,
    limit: int = 1000,
) -> list[datetime]:
    """The due times in (after, until], oldest first; stops after `limit` of them."""
    schedule = expression if isinstance(expression, CronSchedule) else parse(expression)
    found: list[datetime] = []
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    current = after
    while True:
        current = next_after(schedule, current, tz)
        if current > until:
            return found
        found.append(current)
        if len(found) >= limit:
            return found


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _compact(values: frozenset[int], low: int, high: int, fmt: str, range_sep: str) -> str:
    """`*`, step progressions, ranges and lists: the same set of values, short.

    A progression to the end of the field is `start/step` for systemd and
    `*/step` or `start-high/step` for cron (not every cron takes `start/step`).
    """
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    if len(ordered) > 2:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], high + 1, step)):
            if range_sep == "..":
                return f"{fmt.format(ordered[0])}/{step}"
            start = "*" if ordered[0] == low else f"{ordered[0]}-{high}"
            return f"{start}/{step}"
    items = []
    for first, last in _runs(ordered):
        if last - first >= 2:
            items.append(f"{fmt.format(first)}{range_sep}{fmt.format(last)}")
        else:
            items.extend(fmt.format(v) for v in range(first, last + 1))
    return ",".join(items)


def to_numeric(expression: str | CronSchedule) -> str:
    """The same schedule as five numeric fields (for CI systems that take no names or macros)."""
    s = expression if isinstance(expression, CronSchedule) else parse(expression)
    # a restricted field stays restricted (`1-31`, not `*`): it decides the either-day rule
    day = (_compact(s.days, 1, 31, "{}", "-").replace("*", "1-31")) if s.days_restricted else "*"
    weekday = (_compact(s.weekdays, 0, 6, "{}", "-").replace("*", "0-6")) if s.weekdays_restricted else "*"
    return " ".join(
        (
            _compact(s.minutes, 0, 59, "{}", "-"),
            _compact(s.hours, 0, 23, "{}", "-"),
            day,
            _compact(s.months, 1, 12, "{}", "-"),
            weekday,
        )
    )


def _systemd_weekdays(weekdays: frozenset[int]) -> str:
    # systemd's week starts on Monday; Sunday (0) goes last so that Fri..Sun is one range
    positions = frozenset(SYSTEMD_WEEK_ORDER.index(d) for d in weekdays)
    items = []
    for first, last in _runs(sorted(positions)):
        a, b = SYSTEMD_WEEKDAYS[SYSTEMD_WEEK_ORDER[first]], SYSTEMD_WEEKDAYS[SYSTEMD_WEEK_ORDER[last]]
        if last - first >= 2:
            items.append(f"{a}..{b}")
        else:
            items.extend(SYSTEMD_WEEKDAYS[SYSTEMD_WEEK_ORDER[p]] for p in range(first, last + 1))
    return ",".join(items)


def on_calendar_specs(expression: str | CronSchedule, tz: str | None = None) -> list[str]:
    """systemd `OnCalendar=` values for the schedule: one, or two when days OR weekdays match.

    systemd ANDs a weekday with a date, so cron's either-day rule becomes two
    OnCalendar= lines (a timer fires on the union). A time zone other than UTC
    is appended when given (systemd >= 235); spike's schedules always pass one
    (default UTC) so that the host's local time never shifts a schedule.
    """
    s = expression if isinstance(expression, CronSchedule) else parse(expression)
    time = f"{_compact(s.hours, 0, 23, '{:02d}', '..')}:{_compact(s.minutes, 0, 59, '{:02d}', '..')}:00"
    month = _compact(s.months, 1, 12, "{:02d}", "..")
    suffix = f" {tz}" if tz else ""
    days = _compact(s.days, 1, 31, "{:02d}", "..")
    weekdays = _systemd_weekdays(s.weekdays)
    if s.days_restricted and s.weekdays_restricted:
        return [f"*-{month}-{days} {time}{suffix}", f"{weekdays} *-{month}-* {time}{suffix}"]
    prefix = f"{weekdays} " if s.weekdays_restricted and weekdays else ""
    day_part = days if s.days_restricted else "*"
    return [f"{prefix}*-{month}-{day_part} {time}{suffix}"]


def to_on_calendar(expression: str | CronSchedule, tz: str | None = None) -> str:
    """The single systemd `OnCalendar=` value, e.g. '0 3 * * MON' -> 'Mon *-*-* 03:00:00'.

    Raises when the schedule needs two lines (see `on_calendar_specs`).
    """
    specs = on_calendar_specs(expression, tz)
    if len(specs) > 1:
        raise _error(
            str(expression if isinstance(expression, str) else expression.expression),
            "restricts both day-of-month and day-of-week, which systemd expresses as two OnCalendar= lines",
            fix="use on_calendar_specs() (the timer gets one OnCalendar= line per spec)",
        )
    return specs[0]
