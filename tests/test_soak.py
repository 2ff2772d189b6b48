"""The soak benchmark's short version (bench/soak.py, 75 s instead of 30 minutes): the controller and two node
daemons on a real API server under continuous ADD/DEL churn, two token rotations and one API-server restart;
no address held twice, none leaked, and each process's RSS within 10% of its value after warm-up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import soak  # bench/, found through the path set above

pytestmark = pytest.mark.slow


def test_a_short_soak(tmp_path: Path) -> None:
    settings = soak.Settings(75.0, max_cycles=2_000, down_for=8.0)
    result = soak.run(settings, tmp_path)
    soak.report(result)
    assert result.counts.get("ADD", 0) >= 20 and result.counts.get("pods deleted without DEL", 0) >= 1, result.counts
    assert result.duplicates == []
    assert result.leaked == []
    assert result.rss_ok, result.rss_kib
    assert len(result.events) == 4, result.events
