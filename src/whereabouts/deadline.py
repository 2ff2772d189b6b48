"""The deadline of the CNI call being served: everything that waits (a store's lock, a server's answer, a
retry's backoff) waits at most until then.

One per thread (the node daemon serves each call on a thread of its own); a thread that never started one
(a controller, a test) has none, and waits as long as each caller allows. `_thread._local` rather than
`threading.local`: the CNI process should not pay for importing `threading`.
"""

from __future__ import annotations

import time
from _thread import _local

from whereabouts.errors import TryAgainLater

CALL_SECONDS = 45.0  # well inside the runtimes' own CNI timeouts (Multus gives a call 60 s)

_current = _local()


def start(seconds: float = CALL_SECONDS) -> None:
    """This thread serves a new call: it must be done within `seconds`."""
    _current.at = time.monotonic() + seconds
    _current.seconds = seconds


def clear() -> None:
    _current.at = None


def current() -> tuple[float, float] | None:
    """This thread's deadline (on time.monotonic()) and its call's seconds; None when it has none."""
    at: float | None = getattr(_current, "at", None)
    return None if at is None else (at, _current.seconds)


def passed(seconds: float) -> TryAgainLater:
    """The error of a call whose deadline of `seconds` passed."""
    return TryAgainLater(f"gave up: the call's deadline of {seconds:.0f} s passed")


def remaining(cap: float) -> float:
    """Seconds a wait may take now: `cap`, or less as the deadline nears. Raises TryAgainLater (code 11)
    once the deadline has passed: the runtime retries the call."""
    at: float | None = getattr(_current, "at", None)
    if at is None:
        return cap
    left = at - time.monotonic()
    if left <= 0:
        raise passed(_current.seconds)
    return min(cap, left)
