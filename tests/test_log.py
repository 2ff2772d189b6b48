"""The call log (whereabouts.log.Log): one line per entry, in UTC to the millisecond."""

from __future__ import annotations

import re
import time
from pathlib import Path

from whereabouts.log import Log


def test_an_entry_is_one_line_stamped_in_utc_to_the_millisecond(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    log = Log(str(path), "verbose")
    log.error("ADD container=c1 failed (code 11): the API server said\nline two\r\nline three")
    log.verbose("DEL container=c1 ok")
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 3, lines
    assert lines[0].endswith("the API server said\\nline two\\r\\nline three")
    for line in lines[:2]:
        stamp = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z \[(error|verbose)\] pid=\d+ ", line)
        assert stamp, line
        assert abs(time.mktime(time.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.gmtime())) < 5
