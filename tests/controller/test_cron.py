"""Five-field cron expressions and the reconciler's schedule source (ConfigMap file, flat file, default)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from whereabouts.controller.cron import CronError, Schedule, parse_cron

T = dt.datetime


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("30 4 * * *", T(2026, 12, 1, 21, 0), T(2026, 12, 2, 4, 30)),
        ("30 4 * * *", T(2026, 12, 2, 4, 29, 59), T(2026, 12, 2, 4, 30)),
        ("30 4 * * *", T(2026, 12, 2, 4, 30), T(2026, 12, 3, 4, 30)),
        ("* * * * *", T(2026, 12, 1, 21, 0, 30), T(2026, 12, 1, 21, 1)),
        ("*/15 * * * *", T(2026, 12, 1, 21, 16), T(2026, 12, 1, 21, 30)),
        ("0 0 1 1 *", T(2026, 6, 1), T(2027, 1, 1)),
        ("0 12 * * mon", T(2026, 12, 1), T(2026, 12, 7, 12, 0)),  # 2026-12-01 is a Tuesday
        ("0 12 * * 7", T(2026, 12, 1), T(2026, 12, 6, 12, 0)),  # 7 is Sunday too
        ("0 0 13 * fri", T(2026, 12, 1), T(2026, 12, 4)),  # both day fields set: either matches
        ("0 0 29 feb *", T(2026, 3, 1), T(2028, 2, 29)),
        ("5-10/5 1,3 * dec *", T(2026, 12, 1, 2, 0), T(2026, 12, 1, 3, 5)),
    ],
    ids=[
        "daily",
        "just-before",
        "at-the-minute",
        "every-minute",
        "step",
        "yearly",
        "weekday-name",
        "sunday-7",
        "dom-or-dow",
        "leap-day",
        "lists-ranges-steps",
    ],
)
def test_next_run(expression: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert parse_cron(expression).next_after(after) == expected


@pytest.mark.parametrize(
    "expression",
    ["", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
     "*/0 * * * *", "a * * * *", "5-1 * * * *", "0 0 30 feb *"],
    ids=["empty", "four-fields", "six-fields", "minute-60", "hour-24", "day-0", "month-13", "weekday-8",
         "step-0", "word", "backwards-range", "never-fires"],
)  # fmt: skip
def test_bad_expressions_are_rejected(expression: str) -> None:
    with pytest.raises(CronError):
        parse_cron(expression)


def test_schedule_prefers_the_configmap_file_then_the_flat_file_then_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config"
    assert Schedule(str(path)).current().text == "30 4 * * *"
    assert Schedule(str(path), fallback="0 1 * * *").current().text == "0 1 * * *"
    path.write_text("*/5 * * * *\n")
    assert Schedule(str(path), fallback="0 1 * * *").current().text == "*/5 * * * *"


def test_schedule_change_takes_effect_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("0 3 * * *")
    logged: list[str] = []
    schedule = Schedule(str(path), log=logged.append)
    assert schedule.current().text == "0 3 * * *"
    path.write_text("15 * * * *")
    assert schedule.current().text == "15 * * * *"
    path.write_text("not a schedule")
    assert schedule.current().text == "15 * * * *"
    assert schedule.current().text == "15 * * * *"
    assert sum("not a schedule" in line for line in logged) == 1, logged  # logged once, not on every read
    path.unlink()  # the ConfigMap key removed: back to the fallback
    assert schedule.current().text == "30 4 * * *"


def test_a_bad_fallback_falls_back_to_the_default(tmp_path: Path) -> None:
    assert Schedule(str(tmp_path / "none"), fallback="nonsense", log=lambda _: None).current().text == "30 4 * * *"
