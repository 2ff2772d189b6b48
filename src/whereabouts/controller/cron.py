"""Five-field cron expressions (minute hour day-of-month month day-of-week), and where the schedule comes from.

The reconciler's schedule is read, in order, from the file the `whereabouts-config` ConfigMap is mounted
as (key `cron-expression`, default `/cron-schedule/config`), the flat file's `reconciler_cron_expression`,
and the default `30 4 * * *`, as the Go reconciler does. The file is read again before every wait, so a
change takes effect without a restart; an expression that does not parse is logged and the last good one
kept.

Semantics are those of Vixie cron: `*`, lists, ranges, steps (`*/5`, `1-10/2`), month and weekday names,
`7` for Sunday, and when both day fields are restricted a day matches either one. Times are UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_EXPRESSION = "30 4 * * *"
DEFAULT_SCHEDULE_FILE = "/cron-schedule/config"
MONTHS = {
    name: i + 1
    for i, name in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
}
WEEKDAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
FieldSpec = tuple[str, int, int, dict[str, int]]  # name, lowest value, highest value, names for values
FIELDS: tuple[FieldSpec, ...] = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
                                 ("month", 1, 12, MONTHS), ("day of week", 0, 7, WEEKDAYS))  # fmt: skip
SEARCH_LIMIT = dt.timedelta(days=366 * 5)  # '0 0 30 2 *' never fires: give up instead of searching forever


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronExpression:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is '*'
    any_weekday: bool  # day of week is '*'

    def matches(self, when: dt.datetime) -> bool:
        return (
            when.minute in self.minutes
            and when.hour in self.hours
            and when.month in self.months
            and self._day_matches(when.date())
        )

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after `when`."""
        candidate = when.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = candidate + SEARCH_LIMIT
        while candidate < limit:
            if candidate.month not in self.months:
                candidate = _first_of_next_month(candidate)
            elif not self._day_matches(candidate.date()):
                candidate = candidate.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + dt.timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
            else:
                return candidate
        raise CronError(f"cron expression {self.text!r} never fires")

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week


def parse_cron(text: str) -> CronExpression:
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"invalid cron expression {text!r}: expected 5 fields, got {len(parts)}")
    minutes, hours, days, months, weekdays = [
        _parse_field(p, spec, text) for p, spec in zip(parts, FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in weekdays)  # 7 is Sunday too
    expression = CronExpression(text.strip(), minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")
    expression.next_after(dt.datetime(2000, 1, 1))  # rejects expressions that can never fire
    return expression


def _parse_field(part: str, spec: FieldSpec, text: str) -> frozenset[int]:
    name, low, high, names = spec
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                first, _, last = body.partition("-")
                start, end = _value(first, names), _value(last, names)
            else:
                start = _value(body, names)
                end = high if step_text else start
        except ValueError:
            raise CronError(f"invalid cron expression {text!r}: bad {name} {item!r}") from None
        if step < 1 or not low <= start <= end <= high:
            raise CronError(f"invalid cron expression {text!r}: {name} {item!r} outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int]) -> int:
    return names[text.lower()] if text.lower() in names else int(text)


def _first_of_next_month(when: dt.datetime) -> dt.datetime:
    year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
    return when.replace(year=year, month=month, day=1, hour=0, minute=0)


class Schedule:
    """The reconciler's current schedule: the ConfigMap file, else the flat file's expression, else the
    default; re-read on every `current()`, keeping the last good expression when a new one is bad."""

    def __init__(self, path: str, fallback: str = "", log: Callable[[str], None] = print) -> None:
        self.path = path
        self.fallback = fallback or DEFAULT_EXPRESSION
        self.log = log
        self.expression = self._initial()
        self.rejected = ""  # the last bad text, so that it is logged once, not on every read

    def _initial(self) -> CronExpression:
        try:
            return parse_cron(self.fallback)
        except CronError as exc:
            self.log(f"{exc}; using the default {DEFAULT_EXPRESSION!r}")
            return parse_cron(DEFAULT_EXPRESSION)

    def current(self) -> CronExpression:
        text = self._read() or self.fallback
        if text not in (self.expression.text, self.rejected):
            try:
                self.expression = parse_cron(text)
                self.log(f"reconcile schedule is now {text!r}")
            except CronError as exc:
                self.rejected = text
                self.log(f"{exc}; keeping {self.expression.text!r}")
        return self.expression

    def _read(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError:
            return ""
