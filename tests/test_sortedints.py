"""SortedInts against a plain sorted list: the same members, ranks, counts and slices after any inserts.

Run with buckets of at most 2 * 4 values (LOAD 4 instead of 512), so that small examples fill buckets,
split them and rebuild the tree over their sizes, as thousands of values do in production.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

import whereabouts.sortedints
from whereabouts.sortedints import SortedInts

VALUES = st.integers(-5, 60) | st.integers()


@contextmanager
def small_buckets() -> Iterator[None]:
    saved, whereabouts.sortedints.LOAD = whereabouts.sortedints.LOAD, 4
    try:
        yield
    finally:
        whereabouts.sortedints.LOAD = saved


@settings(max_examples=300)
@given(initial=st.lists(VALUES, max_size=40), inserts=st.lists(VALUES, max_size=60), probes=st.lists(VALUES))
def test_sorted_ints_answers_as_a_sorted_list(initial: list[int], inserts: list[int], probes: list[int]) -> None:
    with small_buckets():
        ints, model = SortedInts(initial), sorted(set(initial))
        for value in inserts:
            assert ints.add(value) == (value not in model)
            if value not in model:
                model.insert(bisect_left(model, value), value)
    assert len(ints) == len(model)
    assert ints.between(min(model, default=0), max(model, default=0)) == model
    for lo in probes:
        hi = lo + abs(probes[0])
        assert (lo in ints) == (lo in model)
        assert ints.rank(lo) == bisect_left(model, lo)
        assert ints.count(lo, hi) == bisect_right(model, hi) - bisect_left(model, lo)
        assert ints.between(lo, hi) == model[bisect_left(model, lo) : bisect_right(model, hi)]


@settings(max_examples=300)
@given(
    initial=st.lists(VALUES, max_size=40),
    changes=st.lists(st.tuples(st.booleans(), VALUES | st.sampled_from(range(-5, 60))), max_size=120),
    probes=st.lists(VALUES, max_size=20),
)
def test_removals_and_copies_answer_as_a_sorted_list(
    initial: list[int], changes: list[tuple[bool, int]], probes: list[int]
) -> None:
    """Removing values (buckets emptied and dropped, the tree rebuilt) and copying keep every answer exact, and
    a copy changes apart from its original (the node daemon copies its live set into each decision's)."""
    with small_buckets():
        ints, model = SortedInts(initial), sorted(set(initial))
        copies = []
        for add, value in changes:
            if add:
                assert ints.add(value) == (value not in model)
                if value not in model:
                    model.insert(bisect_left(model, value), value)
            else:
                assert ints.discard(value) == (value in model)
                if value in model:
                    model.remove(value)
            if len(copies) < 3 and len(model) % 7 == 3:
                copies.append((ints.copy(), list(model)))
    for sorted_ints, expected in [(ints, model), *copies]:
        assert len(sorted_ints) == len(expected)
        assert sorted_ints.between(min(expected, default=0), max(expected, default=0)) == expected
        for lo in [*probes, *expected[:5]]:
            assert (lo in sorted_ints) == (lo in expected)
            assert sorted_ints.rank(lo) == bisect_left(expected, lo)
            assert sorted_ints.count(lo, lo + 9) == bisect_right(expected, lo + 9) - bisect_left(expected, lo)
