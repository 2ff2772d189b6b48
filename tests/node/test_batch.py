"""The node daemon's group commit: concurrent requests of one key are served together, each gets its own
outcome, a request arriving while a round is in flight waits for the next one, and keys never mix."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from whereabouts.errors import RangeExhausted, TryAgainLater
from whereabouts.node.batch import Batcher


def test_a_lone_request_is_served_at_once() -> None:
    assert Batcher().submit("k", 1, lambda requests: [r * 10 for r in requests]) == 10


def queued(batcher: Batcher, key: str) -> int:
    """How many requests of `key` wait for the next round (read under the group's lock, as submit writes it)."""
    with batcher.lock:
        group = batcher.groups.get(key)
    if group is None:
        return 0
    with group.cond:
        return len(group.queue)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll an observable state until it holds: how long a busy machine takes does not matter, only order."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.001)


def test_requests_waiting_during_a_round_are_served_together_in_arrival_order() -> None:
    batcher, rounds = Batcher(), []
    first_round_started, first_round_may_end = threading.Event(), threading.Event()

    def serve(requests: Sequence[int]) -> list[int]:
        rounds.append(list(requests))
        if len(rounds) == 1:
            first_round_started.set()
            assert first_round_may_end.wait(10)  # hold the first round open while the others arrive
        return [r * 10 for r in requests]

    results: dict[int, int] = {}

    def submit(n: int) -> None:
        results[n] = batcher.submit("k", n, serve)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(6)]
    threads[0].start()
    assert first_round_started.wait(10)
    for n in range(1, 6):  # each queued before the next arrives: the arrival order is 1..5
        threads[n].start()
        wait_until(lambda n=n: queued(batcher, "k") == n, f"request {n} queued behind the round in flight")
    first_round_may_end.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert rounds == [[0], [1, 2, 3, 4, 5]]
    assert results == {n: n * 10 for n in range(6)}


def test_each_request_gets_its_own_error_and_a_failed_round_fails_everyone_in_it() -> None:
    batcher = Batcher()
    with pytest.raises(RangeExhausted):  # an error outcome is raised in its own caller
        batcher.submit("k", 1, lambda requests: [RangeExhausted("full")])

    def broken(requests: Sequence[int]) -> list[int]:
        raise TryAgainLater("store unreachable")

    with pytest.raises(TryAgainLater):
        batcher.submit("k", 1, broken)


def test_keys_are_served_apart() -> None:
    batcher, seen = Batcher(), []
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def serve(requests: Sequence[str]) -> list[str]:
        seen.append(list(requests))
        barrier.wait(10)  # both rounds in flight at once: different keys never wait on each other
        return list(requests)

    def submit(key: str) -> None:
        results[key] = batcher.submit(key, key, serve)  # a broken barrier raises here: no result

    threads = [threading.Thread(target=submit, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(seen) == [["a"], ["b"]]
    assert results == {"a": "a", "b": "b"}


def test_the_groups_of_many_distinct_keys_do_not_accumulate() -> None:
    """The keys are network configs, and a daemon serving for months sees many come and go: a group nobody
    waits in is forgotten, so the map holds at most the keys being served right now."""
    batcher, callers, per_caller = Batcher(), 8, 2_500
    most, errors = 0, []

    def serve(requests: Sequence[str]) -> list[str]:
        nonlocal most
        with batcher.lock:  # (submit does not hold it while a round is served)
            most = max(most, len(batcher.groups))
        return list(requests)

    def caller(n: int) -> None:
        try:
            for k in range(per_caller):
                key = f"network-{n}-{k}"
                assert batcher.submit(key, key, serve) == key
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert 1 <= most <= callers, f"{most} groups at once for {callers} callers"
    assert batcher.groups == {}, f"{len(batcher.groups)} of {callers * per_caller} keys still held"


def test_a_round_runs_on_its_members_own_deadlines() -> None:
    """Each request keeps its call's deadline: one whose deadline passes while it waits is answered code 11
    and left out of the next round; that round is served on the deadline of its member with the most time
    left (a slow store round outlasting an older member's deadline does not fail a newer one); and the older
    member is answered code 11 at its own deadline, not after it. Before, the round ran on its leader's
    deadline: with B leading, C failed; with C leading, B was answered after its deadline."""
    from whereabouts import deadline

    batcher, rounds = Batcher(), []
    first_round_started, first_round_may_end = threading.Event(), threading.Event()
    due: dict[str, float] = {}
    answered: dict[str, tuple[object, float]] = {}

    def serve(requests: Sequence[str]) -> list[str]:
        rounds.append(list(requests))
        if len(rounds) == 1:
            first_round_started.set()
            assert first_round_may_end.wait(10)
        else:  # a slow store: the round outlasts B's deadline, then waits on the store as a store does
            time.sleep(max(0.0, due["B"] + 1.0 - time.monotonic()))
            deadline.remaining(60)
        return [f"{r} served" for r in requests]

    def call(name: str, seconds: float) -> None:
        deadline.start(seconds)
        due[name] = time.monotonic() + seconds
        try:
            outcome: object = batcher.submit("k", name, serve)
        except TryAgainLater as exc:
            outcome = exc
        finally:
            deadline.clear()
        answered[name] = outcome, time.monotonic()

    threads = {name: threading.Thread(target=call, args=(name, seconds)) for name, seconds in
               [("A", 30.0), ("B", 2.0), ("C", 5.0), ("D", 0.3)]}  # fmt: skip
    threads["A"].start()
    assert first_round_started.wait(10)
    for n, name in enumerate("BCD", 1):
        threads[name].start()
        wait_until(lambda n=n: queued(batcher, "k") == n, f"{name} queued behind the round in flight")
    wait_until(lambda: "D" in answered, "D answered at its deadline, while it waited")
    first_round_may_end.set()
    for thread in threads.values():
        thread.join(20)
        assert not thread.is_alive()
    assert rounds == [["A"], ["B", "C"]]  # D's deadline passed before the round: not in it
    assert answered["A"][0] == "A served" and answered["C"][0] == "C served"
    for name in "BD":
        outcome, at = answered[name]
        assert isinstance(outcome, TryAgainLater) and "deadline" in str(outcome), outcome
        assert at - due[name] < 0.5, f"{name} answered {at - due[name]:.2f} s after its deadline"
