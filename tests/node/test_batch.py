"""The node daemon's group commit: concurrent requests of one key are served together, each gets its own
outcome, a request arriving while a round is in flight waits for the next one, and keys never mix."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from whereabouts.errors import RangeExhausted, TryAgainLater
from whereabouts.node.batch import Batcher


def test_a_lone_request_is_served_at_once() -> None:
    assert Batcher().submit("k", 1, lambda requests: [r * 10 for r in requests]) == 10


def test_requests_waiting_during_a_round_are_served_together_in_arrival_order() -> None:
    batcher, rounds = Batcher(), []
    first_round = threading.Event()

    def serve(requests: Sequence[int]) -> list[int]:
        rounds.append(list(requests))
        if len(rounds) == 1:
            first_round.wait(5)  # hold the first round open while the others arrive
        return [r * 10 for r in requests]

    results: dict[int, int] = {}

    def submit(n: int) -> None:
        results[n] = batcher.submit("k", n, serve)

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    time.sleep(0.1)
    for n in range(1, 6):
        threads.append(threading.Thread(target=submit, args=(n,)))
        threads[-1].start()
        time.sleep(0.02)
    first_round.set()
    for thread in threads:
        thread.join()
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

    def serve(requests: Sequence[str]) -> list[str]:
        seen.append(list(requests))
        barrier.wait(5)  # both rounds in flight at once: different keys never wait on each other
        return list(requests)

    threads = [threading.Thread(target=batcher.submit, args=(key, key, serve)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == [["a"], ["b"]]
