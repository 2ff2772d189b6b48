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


class _Counted(_Store):
    def __init__(self, settings: Any, closed: list[Any]) -> None:
        self.settings, self.closed = settings, closed

    def close(self) -> None:
        self.closed.append(self.settings)


def test_idle_stores_are_capped_across_settings_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each store holds file descriptors: however many settings (a data directory per network), at most
    IDLE_STORES are kept idle, those of the settings used longest ago closed first (before: up to
    IDLE_PER_SETTINGS for every settings seen in the last SHARED_IDLE seconds)."""
    from whereabouts.node import runtime

    monkeypatch.setattr(runtime, "IDLE_STORES", 4)
    closed: list[Any] = []
    pool = runtime.StorePool(opener=lambda settings: _Counted(settings, closed))
    for n in range(6):
        pool.warm(f"settings {n}")  # leased and given back: idle
    assert closed == ["settings 0", "settings 1"]
    assert pool.open_count() == 4
    pool.shed()  # out of descriptors: every idle store closes at once
    assert pool.open_count() == 0 and len(closed) == 6


def test_the_sweep_closes_idle_stores_with_no_call_coming(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sweep` (the daemon runs it between accepts) closes what no call used for SHARED_IDLE seconds: a
    daemon that gets no call, or cannot accept one for want of descriptors, frees them all the same."""
    from whereabouts.node import runtime

    closed: list[Any] = []
    pool = runtime.StorePool(opener=lambda settings: _Counted(settings, closed))
    pool.warm("old")
    pool.warm("recent")
    pool.used["old"] -= runtime.SHARED_IDLE + 1
    pool.sweep()
    assert closed == ["old"] and pool.open_count() == 1
