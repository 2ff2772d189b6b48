"""Cron expressions as the Go reconciler reads them (robfig/cron v3's standard parser with descriptors, in UTC
unless a CRON_TZ= prefix names a zone), and where the schedule comes from.

The expected next runs are worked out from robfig's rules (parser.go, spec.go), not from this code: a field
with `*` or `?` and no step above 1 is a star; when either day field is a star a day must match both, else
either; `N/STEP` runs to the end of the field; `@every` is the start, to the second, plus the duration (at
least a second); a wall-clock time a DST change skips is skipped, one it repeats runs twice.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from whereabouts.controller.cron import CronError, Schedule, parse_cron

T = dt.datetime
START = T(2026, 12, 1, 21, 0, 30)  # a Tuesday, in UTC; Dec 2 is a Wednesday, Dec 6 a Sunday, Dec 7 a Monday

# (expression, next run after START in UTC, why)
GO_TABLE = [
    ("30 4 * * *", T(2026, 12, 2, 4, 30), "the default"),
    ("* * * * *", T(2026, 12, 1, 21, 1), "every minute, at its start"),
    ("*/1 * * * *", T(2026, 12, 1, 21, 1), "step 1"),
    ("? ? ? ? ?", T(2026, 12, 1, 21, 1), "'?' is '*' in every field"),
    ("*/15 * * * *", T(2026, 12, 1, 21, 15), "step"),
    ("5/15 * * * *", T(2026, 12, 1, 21, 5), "N/STEP runs from N to the end: 5,20,35,50"),
    ("+5 * * * *", T(2026, 12, 1, 21, 5), "a number as Go's Atoi reads it"),
    ("0 */6 * * *", T(2026, 12, 2, 0, 0), "hours 0,6,12,18"),
    ("0 9-17/4 * * *", T(2026, 12, 2, 9, 0), "range with a step: 9,13,17"),
    ("0 4 * * 1-5", T(2026, 12, 2, 4, 0), "weekdays"),
    ("0,30 8 * * mon-fri", T(2026, 12, 2, 8, 0), "list and weekday names"),
    ("0 12 * * MON", T(2026, 12, 7, 12, 0), "names in any case"),
    ("0 12 * * 0", T(2026, 12, 6, 12, 0), "0 is Sunday"),
    ("0 0 * * sun-sat/2", T(2026, 12, 3, 0, 0), "a named range with a step: Sun, Tue, Thu, Sat"),
    ("0 0 * * 5/1", T(2026, 12, 4, 0, 0), "N/1 in day of week: Friday and Saturday"),
    ("0 0 1,15 * *", T(2026, 12, 15, 0, 0), "day list"),
    ("0 0 1,,15 * *", T(2026, 12, 15, 0, 0), "an empty list item is dropped"),
    ("0 0 31 * *", T(2026, 12, 31, 0, 0), "day 31"),
    ("0 0 1 jan,jul *", T(2027, 1, 1, 0, 0), "month names"),
    ("0 0 1 JUL-AUG *", T(2027, 7, 1, 0, 0), "month range by name"),
    ("0 0 29 feb *", T(2028, 2, 29, 0, 0), "the next leap day"),
    ("0 0 ? * fri", T(2026, 12, 4, 0, 0), "'?' day of month is a star: Fridays only"),
    ("0 0 13 * fri", T(2026, 12, 4, 0, 0), "both day fields restricted: the 13th or a Friday"),
    ("0 0 */1 * mon", T(2026, 12, 7, 0, 0), "'*/1' is a star: Mondays only, not every day"),
    ("0 0 1-31 * mon", T(2026, 12, 2, 0, 0), "'1-31' is no star: any day of month or Monday, so every day"),
    ("0 0 */2 * mon", T(2026, 12, 3, 0, 0), "'*/2' is no star: an odd day or a Monday"),
    ("0 0 29 2 mon", T(2027, 2, 1, 0, 0), "February: the 29th or a Monday"),
    ("@yearly", T(2027, 1, 1, 0, 0), "0 0 1 1 *"),
    ("@annually", T(2027, 1, 1, 0, 0), "0 0 1 1 *"),
    ("@monthly", T(2027, 1, 1, 0, 0), "0 0 1 * *"),
    ("@weekly", T(2026, 12, 6, 0, 0), "0 0 * * 0"),
    ("@daily", T(2026, 12, 2, 0, 0), "0 0 * * *"),
    ("@midnight", T(2026, 12, 2, 0, 0), "0 0 * * *"),
    ("@hourly", T(2026, 12, 1, 22, 0), "0 * * * *"),
    ("@every 1h30m", T(2026, 12, 1, 22, 30, 30), "the start to the second, plus 90 minutes"),
    ("@every 1.5h", T(2026, 12, 1, 22, 30, 30), "a fractional Go duration"),
    ("@every 90s", T(2026, 12, 1, 21, 2, 0), "seconds"),
    ("@every 2m500ms", T(2026, 12, 1, 21, 2, 30), "rounded down to whole seconds"),
    ("@every 500ms", T(2026, 12, 1, 21, 0, 31), "at least one second"),
    ("CRON_TZ=UTC 30 4 * * *", T(2026, 12, 2, 4, 30), "UTC named"),
    ("CRON_TZ=Europe/Berlin 0 9 * * *", T(2026, 12, 2, 8, 0), "09:00 CET is 08:00 UTC"),
    ("TZ=Asia/Tokyo 30 4 * * *", T(2026, 12, 2, 19, 30), "it is Dec 2 06:00 in Tokyo: the next 04:30 is Dec 3's"),
    ("CRON_TZ=America/New_York @daily", T(2026, 12, 2, 5, 0), "a descriptor in a zone: midnight EST"),
]


@pytest.mark.parametrize(("expression", "expected", "why"), GO_TABLE, ids=[row[0] for row in GO_TABLE])
def test_next_run_as_the_go_reconciler_computes_it(expression: str, expected: dt.datetime, why: str) -> None:
    assert parse_cron(expression).next_after(START) == expected, why


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("30 4 * * *", T(2026, 12, 2, 4, 29, 59), T(2026, 12, 2, 4, 30)),
        ("30 4 * * *", T(2026, 12, 2, 4, 30), T(2026, 12, 3, 4, 30)),  # strictly after
        ("0 12 * * 7", T(2026, 12, 1), T(2026, 12, 6, 12, 0)),  # 7 for Sunday: robfig refuses it, cron takes it
        # New York, clocks forward on 2026-03-08 (02:00 EST -> 03:00 EDT): 02:30 that day does not exist, and
        # robfig's search steps over the whole hour to the next day's 02:30 EDT
        ("CRON_TZ=America/New_York 30 2 * * *", T(2026, 3, 8, 5, 0), T(2026, 3, 9, 6, 30)),
        ("CRON_TZ=America/New_York 0 * * * *", T(2026, 3, 8, 6, 0), T(2026, 3, 8, 7, 0)),  # 01:00 EST -> 03:00 EDT
        # clocks back on 2026-11-01 (02:00 EDT -> 01:00 EST): 01:30 happens twice, and runs twice
        ("CRON_TZ=America/New_York 30 1 * * *", T(2026, 11, 1, 5, 0), T(2026, 11, 1, 5, 30)),
        ("CRON_TZ=America/New_York 30 1 * * *", T(2026, 11, 1, 5, 30), T(2026, 11, 1, 6, 30)),
        ("CRON_TZ=America/New_York 30 1 * * *", T(2026, 11, 1, 6, 30), T(2026, 11, 2, 6, 30)),
    ],
    ids=["just-before", "at-the-minute", "sunday-7", "dst-gap-skipped", "dst-gap-hourly", "dst-repeat-first",
         "dst-repeat-second", "dst-repeat-done"],
)  # fmt: skip
def test_next_run_around_the_edges(expression: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert parse_cron(expression).next_after(after) == expected


@pytest.mark.parametrize(
    "expression",
    ["", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
     "*/0 * * * *", "a * * * *", "5-1 * * * *", "1-2-3 * * * *", "*/5/2 * * * *", "0 0 * mon *", "jan * * * *",
     "0 0 L * *", "0 0 15W * *", "0 0 * * 1#2", ", * * * *", "0 0 30 feb *", "0 0 31 4,6,9,11 *", "@every",
     "@every 1x", "@every h", "@reboot", "@Daily", "TZ=Nowhere/Land * * * *", "CRON_TZ=UTC", "@every 99999999h",
     "@every 2562047h47m17s", "@every -2562048h"],
    ids=["empty", "four-fields", "six-fields", "minute-60", "hour-24", "day-0", "month-13", "weekday-8", "step-0",
         "word", "backwards-range", "two-dashes", "two-slashes", "weekday-name-as-month", "month-name-as-minute",
         "quartz-L", "quartz-W", "quartz-hash", "no-values", "never-fires", "never-fires-either", "every-nothing",
         "every-bad-unit", "every-no-number", "unknown-descriptor", "descriptor-case", "unknown-zone",
         "zone-alone", "every-past-go-duration", "every-just-past-go-duration", "every-negative-past-go-duration"],
)  # fmt: skip
def test_what_the_go_reconciler_refuses_is_refused_naming_the_expression(expression: str) -> None:
    with pytest.raises(CronError, match="cron expression") as refused:
        parse_cron(expression)
    assert repr(expression.strip()) in str(refused.value)


def test_the_longest_go_duration_is_taken_and_a_run_past_the_calendar_is_a_cron_error() -> None:
    longest = parse_cron("@every 2562047h47m16s")  # Go's longest duration: some 292 years
    assert longest.next_after(dt.datetime(2026, 1, 1)) == dt.datetime(2026, 1, 1) + dt.timedelta(seconds=9223372036)
    with pytest.raises(CronError, match="never fires"):  # not an OverflowError that ends the reconcile loop
        longest.next_after(dt.datetime(9800, 1, 1))
    with pytest.raises(CronError, match="never fires"):
        parse_cron("@hourly").next_after(dt.datetime(9999, 12, 31, 23, 30))


def test_the_first_file_holding_an_expression_wins_then_the_flat_file_then_the_default(tmp_path: Path) -> None:
    openshift, upstream = tmp_path / "reconciler_cron_expression", tmp_path / "config"
    paths = [str(openshift), str(upstream)]
    assert Schedule(paths).current().text == "30 4 * * *"  # no ConfigMap at all
    assert Schedule(paths, fallback="0 1 * * *").current().text == "0 1 * * *"
    upstream.write_text("*/5 * * * *\n")
    assert Schedule(paths, fallback="0 1 * * *").current().text == "*/5 * * * *"
    openshift.write_text("@hourly")
    assert Schedule(paths, fallback="0 1 * * *").current().text == "@hourly"
    openshift.write_text("  \n")  # an empty key says nothing
    assert Schedule(paths).current().text == "*/5 * * * *"


def test_schedule_change_takes_effect_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("0 3 * * *")
    logged: list[str] = []
    schedule = Schedule([str(path)], log=logged.append)
    assert schedule.current().text == "0 3 * * *"
    path.write_text("15 * * * *")
    assert schedule.current().text == "15 * * * *"
    path.write_text("not a schedule")
    assert schedule.current().text == "15 * * * *"
    assert schedule.current().text == "15 * * * *"
    assert sum("not a schedule" in line for line in logged) == 1, logged  # logged once, not on every read
    assert str(path) in logged[-1]
    path.unlink()  # the ConfigMap key removed: back to the default
    assert schedule.current().text == "30 4 * * *"


@pytest.mark.parametrize("where", ["file", "fallback"])
def test_a_bad_expression_at_start_up_is_an_error_naming_it_and_its_source(tmp_path: Path, where: str) -> None:
    path = tmp_path / "config"
    if where == "file":
        path.write_text("61 * * * *")
    with pytest.raises(CronError) as refused:
        Schedule([str(path)], fallback="61 * * * *" if where == "fallback" else "")
    assert "'61 * * * *'" in str(refused.value)
    assert (str(path) if where == "file" else "flat file") in str(refused.value)
