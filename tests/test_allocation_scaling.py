"""Allocation cost grows about linearly (n log n) in the number of ranges, allocations and reservations.

A config with 20,000 `ipRanges` once took minutes in `allocate()` (every range rescanned every planned change
and every reservation) while the local store held the node's write lock. Each case times 2,000 and 20,000
ranges in one run, in CPU time of this process (the machine may be busy): 20,000 must take under three
seconds (~0.3 s on a quiet machine, 1.2 s seen in CI on a busy one; quadratic takes minutes), and ten
times the ranges at most RATIO times the time (quadratic would be a hundred). A SIGALRM aborts a quadratic
run instead of letting it grind for minutes.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from whereabouts.allocator import Decision, PoolRange, allocate
from whereabouts.iptext import parse_address
from whereabouts.model import Owner, PoolKey, PoolState, Snapshot
from whereabouts.ranges import parse_range

SMALL, BIG = 2_000, 20_000
BUDGET = 3.0  # CPU seconds for BIG ranges (CPU time still grows when other processes share the caches)
RATIO = 30  # BIG/SMALL time: n log n gives ~12, quadratic 100
ABORT_AFTER = 20  # wall seconds for one BIG run before it counts as quadratic

ME = Owner("ctr-me", "eth0", "ns/me")
OTHER = Owner("ctr-other", "eth0", "ns/other")

Case = tuple[list[PoolRange], Snapshot, Callable[[Decision], None]]


def ip(text: str) -> int:
    return parse_address(text)[1]


def distinct_slash24s(n: int) -> Case:
    """n /24s of one network, each already holding its .1 (pool entry and reservation) for another pod."""
    ranges = [_range(f"10.{i >> 8}.{i & 255}.0/24") for i in range(n)]
    snapshot = _snapshot(ranges, {pr: [pr.rng.network + 1] for pr in ranges})

    def check(decision: Decision) -> None:
        assert [ips for _, ips in decision.held] == [(pr.rng.network + 2,) for pr in ranges]

    return ranges, snapshot, check


def windows_of_one_network(n: int) -> Case:
    """n overlapping ranges of one network_name: one /16 through n windows, every window's first address held
    by another pod, so each range passes over a run of held addresses."""
    starts = [f"10.0.{i % 250}.{1 + i // 250}" for i in range(n)]
    ranges = [_range("10.0.0.0/16", "net", range_start=start) for start in starts]
    snapshot = _snapshot(ranges[:1], {ranges[0]: [ip(start) for start in starts]})

    def check(decision: Decision) -> None:
        picked = [ips[0] for _, ips in decision.held]
        assert len(set(picked)) == n, "an address handed to two ranges"
        assert all(pr.rng.first <= value for (pr, _), value in zip(decision.held, picked, strict=True))
        assert not set(picked) & {ip(start) for start in starts}

    return ranges, snapshot, check


def repeated_add_of_one_network(n: int) -> Case:
    """The ADD of the case above repeated: the attachment holds each window's first address already, and
    gets each range's back, once (not every address of the shared pool for every range)."""
    starts = [ip(f"10.0.{i % 250}.{1 + i // 250}") for i in range(n)]
    ranges = [_range("10.0.0.0/16", "net", range_start=_text(start)) for start in starts]
    snapshot = _snapshot(ranges[:1], {ranges[0]: starts}, owner=ME)

    def check(decision: Decision) -> None:
        assert [ips for _, ips in decision.held] == [(start,) for start in starts]
        assert not decision.changes

    return ranges, snapshot, check


def _range(cidr: str, network: str = "", **kw: str) -> PoolRange:
    rng = parse_range(cidr, key="range", **kw)
    return PoolRange(PoolKey(network, rng.cidr), rng)


def _text(value: int) -> str:
    return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _snapshot(ranges: list[PoolRange], held: dict[PoolRange, list[int]], owner: Owner = OTHER) -> Snapshot:
    pools = {pr.key: PoolState(pr.key, 1) for pr in ranges}
    reservations = {}
    for pr, values in held.items():
        for value in values:
            pools[pr.key].allocations[value] = owner
            reservations[(pr.key.network, 4, value)] = owner
    return Snapshot(pools, reservations)


@contextmanager
def abort_after(seconds: float, what: str) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} still running after {seconds} s: quadratic")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cpu_time(make: Callable[[int], Case], n: int, runs: int) -> float:
    """The least CPU time of `runs` allocations for n ranges (each from a fresh snapshot), result checked."""
    best = float("inf")
    for _ in range(runs):
        ranges, snapshot, check = make(n)
        gc.collect()
        with abort_after(ABORT_AFTER, f"allocate() for {n} ranges"):
            started = time.process_time()
            decision = allocate(ranges=ranges, snapshot=snapshot, owner=ME)
            best = min(best, time.process_time() - started)
        check(decision)
    return best


@pytest.mark.parametrize("make", [distinct_slash24s, windows_of_one_network, repeated_add_of_one_network])
def test_allocation_time_grows_about_linearly_in_ranges(make: Callable[[int], Case]) -> None:
    small = cpu_time(make, SMALL, runs=3)
    big = cpu_time(make, BIG, runs=3)
    assert big < BUDGET, f"{BIG} ranges took {big:.2f} s of CPU"
    assert big / small < RATIO, f"{SMALL} ranges: {small * 1000:.0f} ms, {BIG}: {big * 1000:.0f} ms"
