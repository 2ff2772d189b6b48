"""The reconciler's schedule: the Go reconciler's cron syntax and next-run times, and where it is read from.

The Go reconciler schedules with gocron's `CronJob(expression, false)` in UTC: robfig/cron v3's standard
parser with descriptors. So does this module, with these readings of robfig's:
- five fields, minute hour day-of-month month day-of-week; in each, a comma list of `*` or `?` (the same),
  `N`, `A-B`, each optionally `/STEP` (`N/STEP` runs from N to the end of the field); month and weekday
  names in any case (`jan`, `MON-fri`). Also `7` for Sunday, which robfig refuses and every cron takes.
- the day fields: when either of them is a star (an item `*` or `?` with no step above 1, so `*/1` is one and
  `*/2` is not), a day must match both; otherwise a day matching either one is a match.
- `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`, and `@every DURATION` (a Go
  duration such as `1h30m`, at most Go's longest, 2562047h47m16s: rounded down to whole seconds, at least one
  second; the first run that long after start-up, then that long after the previous one).
- a `CRON_TZ=ZONE ` or `TZ=ZONE ` prefix: the fields are wall-clock times in that zone (UTC without one). A
  time a DST change skips (02:30 on the night clocks go forward) is skipped, one it repeats runs twice.

croniter computes the next runs. It reads fields its own way (`5-5` in some versions means every value,
`1-31` and `*/1` are told apart from `*` differently, `L`, `W`, `#` are its own), so it is handed only what
this module has read: each field as `*` or an explicit list of values, and the day rule as `day_or`.

The expression comes, in order, from the first of `--cron-file` files (the `whereabouts-config` ConfigMap's
keys `reconciler_cron_expression`, then `cron-expression`) that holds one, the flat file's
`reconciler_cron_expression`, and the default `30 4 * * *`. Files are read again before every wait, so a
change takes effect without a restart; an expression that does not parse stops the controller at start-up
with an error naming it, and later is logged once while the last good one is kept.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from croniter import CroniterBadDateError, croniter

DEFAULT_EXPRESSION = "30 4 * * *"
# The whereabouts-config ConfigMap as deploy/base/deployment.yaml mounts it: the OpenShift key wins (see cli).
SCHEDULE_FILES = ("/cron-schedule/reconciler_cron_expression", "/cron-schedule/config")
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                          "dec"))}  # fmt: skip
WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# name, first value, last value (where `*` and 'N/STEP' end), highest value written, names for values
FieldSpec = tuple[str, int, int, int, dict[str, int]]
FIELDS: tuple[FieldSpec, ...] = (("minute", 0, 59, 59, {}), ("hour", 0, 23, 23, {}), ("day of month", 1, 31, 31, {}),
                                 ("month", 1, 12, 12, MONTHS), ("day of week", 0, 6, 7, WEEKDAYS))  # fmt: skip
NUMBER = re.compile(r"\+?[0-9]{1,9}")  # what Go's strconv.Atoi takes here (a sign cannot come after '-')
# Go's time.ParseDuration: a sequence of decimal numbers, each with a unit; a lone 0 needs none
DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
DST_SHIFT = dt.timedelta(hours=3)  # more than any zone's clocks move at once
DST_CANDIDATES = 10_000  # wall-clock runs looked at before an expression in a zone counts as never firing
MAX_EVERY = (2**63 - 1) / 1e9  # seconds: Go's longest time.Duration (2562047h47m16s), what ParseDuration takes


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronExpression:
    """A parsed expression. `next_after` takes and returns naive UTC datetimes."""

    text: str
    fields: str = ""  # for croniter: five fields, each '*' or a list of values
    day_or: bool = False
    zone: dt.tzinfo = dt.UTC
    every: int = 0  # @every: seconds between runs (then nothing else is set)

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first run strictly after `when`; CronError when there is none this side of the year 9999."""
        try:
            if self.every:
                return when.replace(microsecond=0) + dt.timedelta(seconds=self.every)
            if self.zone is dt.UTC:
                return next(self._wall_times(when))
            return self._next_in_zone(when.replace(tzinfo=dt.UTC)).replace(tzinfo=None)
        except OverflowError:  # past datetime's last year
            raise CronError(f"cron expression {self.text!r} never fires") from None

    def _wall_times(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """The runs as naive wall-clock times, from croniter: the same in every croniter version (their
        handling of time zones is not: some run a repeated 01:30 once, or a day late)."""
        runs = croniter(self.fields, after, day_or=self.day_or)
        while True:
            try:
                yield runs.get_next(dt.datetime)
            except CroniterBadDateError:
                raise CronError(f"cron expression {self.text!r} never fires") from None

    def _next_in_zone(self, when: dt.datetime) -> dt.datetime:
        """Each wall-clock run is an instant, none where a DST change skips the time and two where it repeats
        it, as robfig counts: the first instant after `when`. A later wall time can be an earlier instant
        (01:45 EDT comes before the second 01:30), so the runs up to DST_SHIFT past the first one all count."""
        walls = self._wall_times(when.astimezone(self.zone).replace(tzinfo=None) - DST_SHIFT)
        best: tuple[dt.datetime, dt.datetime] | None = None  # (instant, its wall time)
        for wall in islice(walls, DST_CANDIDATES):
            if best is not None and wall > best[1] + DST_SHIFT:
                return best[0]
            for instant in _instants(wall, self.zone):
                if instant > when and (best is None or instant < best[0]):
                    best = (instant, wall)
        raise CronError(f"cron expression {self.text!r} never fires")


def _instants(wall: dt.datetime, zone: dt.tzinfo) -> list[dt.datetime]:
    """The UTC instants a wall-clock time stands for in `zone`: one, none (skipped), or two (repeated)."""
    found: list[dt.datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(dt.UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant not in found:
            found.append(instant)
    return found


def parse_cron(text: str) -> CronExpression:
    """Read an expression as the Go reconciler does; CronError names it and says what is wrong."""
    spec = text.strip()
    try:
        zone, spec = _zone(spec)
        if spec.startswith("@every "):
            return CronExpression(text.strip(), every=_every(spec.removeprefix("@every ")))
        if spec.startswith("@"):
            if spec not in DESCRIPTORS:
                raise ValueError(f"unknown descriptor {spec!r}; expected one of {', '.join(DESCRIPTORS)} or @every")
            spec = DESCRIPTORS[spec]
        expression = _fields(text.strip(), spec.split(), zone)
    except ValueError as exc:
        raise CronError(f"invalid cron expression {text.strip()!r}: {exc}") from None
    expression.next_after(dt.datetime(2000, 1, 1))  # refuses one that never fires, as gocron does
    return expression


def _zone(spec: str) -> tuple[dt.tzinfo, str]:
    """A leading `CRON_TZ=ZONE ` or `TZ=ZONE `, as Go's time.LoadLocation reads ZONE."""
    if not spec.startswith(("TZ=", "CRON_TZ=")):
        return dt.UTC, spec
    name, space, rest = spec.partition("=")[2].partition(" ")
    if not space:
        raise ValueError("a time zone prefix must be followed by the schedule")
    if name in ("", "UTC"):
        return dt.UTC, rest.strip()
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name), rest.strip()
    except (KeyError, ValueError, OSError):  # not found (a KeyError), a malformed key, a directory
        raise ValueError(f"unknown time zone {name!r}") from None


def _every(duration: str) -> int:
    """Whole seconds of a Go duration, at least one (robfig's Every)."""
    sign, body = (-1, duration[1:]) if duration[:1] == "-" else (1, duration.removeprefix("+"))
    if body == "0":
        return 1
    parts = DURATION_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body or any(n in ("", ".") for n, _ in parts):
        raise ValueError(f"invalid duration {duration!r}; expected a Go duration such as 1h30m")
    seconds = sign * sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    if abs(seconds) > MAX_EVERY:
        raise ValueError(f"invalid duration {duration!r}: longer than Go's longest, 2562047h47m16s")
    return max(1, int(seconds))


def _fields(text: str, parts: Sequence[str], zone: dt.tzinfo) -> CronExpression:
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    parsed = [_field(part, spec) for part, spec in zip(parts, FIELDS, strict=True)]
    (minutes, _), (hours, _), (days, day_star), (months, _), (weekdays, weekday_star) = parsed
    weekdays = frozenset(d % 7 for d in weekdays)  # 7 is Sunday too
    values = [minutes, hours, days, months, weekdays]
    full = [frozenset(range(first, last + 1)) for _, first, last, _, _ in FIELDS]
    lists = ["*" if v == every else ",".join(map(str, sorted(v))) for v, every in zip(values, full, strict=True)]
    day_or = not (day_star or weekday_star)
    if day_or and "*" in (lists[2], lists[4]):
        lists[2] = lists[4] = "*"  # either day field matching every day: every day matches
    return CronExpression(text, " ".join(lists), day_or, zone)


def _field(text: str, spec: FieldSpec) -> tuple[frozenset[int], bool]:
    """A field's values, and whether it counts as a star for the day rule."""
    name, low, top, high, names = spec
    values: set[int] = set()
    star = False
    for item in (i for i in text.split(",") if i):  # robfig drops empty items ('1,,2')
        span, slash, step_text = item.partition("/")
        first, dash, last = span.partition("-")
        item_star = first in ("*", "?")
        if item_star:
            start, end = low, top  # robfig reads nothing after a star's '-'
        else:
            start = _value(first, names, name, item)
            end = _value(last, names, name, item) if dash else start
        step = _value(step_text, {}, name, item) if slash else 1
        if slash and not dash:
            end = top  # 'N/STEP': from N to the end of the field
        item_star = item_star and step <= 1  # '*/2' is no star for the day rule, '*/1' is
        if step < 1 or not low <= start <= end <= high:
            raise ValueError(f"{name} {item!r} is not a range within {low}-{high} with a positive step")
        values.update(range(start, end + 1, step))
        star = star or item_star
    if not values:
        raise ValueError(f"{name} {text!r} holds no value")
    return frozenset(values), star


def _value(text: str, names: dict[str, int], name: str, item: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not NUMBER.fullmatch(text):
        raise ValueError(f"{name} {item!r}: {text!r} is not a number{' or a name' if names else ''}")
    return int(text)


class Schedule:
    """The reconciler's current expression, re-read on every `current()`: the first of `paths` that holds
    one, else `fallback` (the flat file's), else the default. The first read must parse (CronError names the
    expression and its source); a later bad one is logged once and the last good expression kept."""

    def __init__(self, paths: Sequence[str], fallback: str = "", log: Callable[[str], None] = print) -> None:
        self.paths = tuple(paths)
        self.fallback = fallback.strip()
        self.log = log
        self.rejected = ""  # the last bad text, so that it is logged once, not on every read
        text, source = self._read()
        try:
            self.expression = parse_cron(text)
        except CronError as exc:
            raise CronError(f"{exc} (from {source})") from None

    def current(self) -> CronExpression:
        text, source = self._read()
        if text not in (self.expression.text, self.rejected):
            try:
                self.expression = parse_cron(text)
                self.log(f"reconcile schedule is now {text!r} (from {source})")
            except CronError as exc:
                self.rejected = text
                self.log(f"{exc} (from {source}); keeping {self.expression.text!r}")
        return self.expression

    def _read(self) -> tuple[str, str]:
        """The expression and where it came from."""
        for path in self.paths:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read().strip()
            except (OSError, ValueError):  # absent (the ConfigMap or its key), unreadable, not UTF-8
                continue
            if text:
                return text, path
        if self.fallback:
            return self.fallback, "the flat file's reconciler_cron_expression"
        return DEFAULT_EXPRESSION, "the default"
