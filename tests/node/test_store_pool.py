"""The node daemon's pool of open stores (whereabouts.node.runtime.StorePool): what closes when, and on whose
time."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest


class _Store:
    def close(self) -> None:
        pass

    def reusable(self) -> bool:
        return True


def test_a_shared_part_idle_too_long_is_closed_off_the_call_that_finds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch-fed cache no call used for SHARED_IDLE seconds is closed when the next call of other settings
    leases a store; its close flushes the mirror and hands its pools back (seconds against a slow server), so
    it runs beside that call, not on its time (before: inline, in the call's lease)."""
    from whereabouts.node import runtime

    closing, release = threading.Event(), threading.Event()

    class Cache:
        def close(self) -> None:
            closing.set()
            release.wait(30)

    pool = runtime.StorePool(opener=lambda settings: _Store())
    old: Any = "old settings"
    pool.keep(old, Cache)
    pool.used[old] = time.monotonic() - runtime.SHARED_IDLE - 1
    try:
        started = time.monotonic()
        store = pool.lease("new settings")
        assert time.monotonic() - started < 1.0
        assert closing.wait(10)  # closed all the same
        assert old not in pool.shared
        pool.give_back("new settings", store, failed=False)
    finally:
        release.set()
