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
