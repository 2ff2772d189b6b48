"""`SortedInts`: a sorted set of ints with O(log n) rank queries and inserts that stay cheap, stdlib only.

A plain sorted list answers rank queries with `bisect` but shifts everything behind an insert: a decision
over thousands of ranges inserts thousands of planned addresses into sets that large, and that made it
quadratic. Here the values live in sorted buckets of at most 2 * LOAD ints, and a Fenwick tree over the
bucket sizes counts the values before any bucket in O(log buckets): an insert or a removal shifts one bucket, a rank
query is two bisects and a walk up the tree. (The layout of the `sortedcontainers` package, cut down to
what the allocator asks.)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Iterable

LOAD = 512


class SortedInts:
    __slots__ = ("_buckets", "_maxes", "_size", "_tree")

    def __init__(self, values: Iterable[int] = ()) -> None:
        if not values:
            self._buckets, self._maxes, self._size, self._tree = [], [], 0, [0]
            return
        ordered = sorted(set(values))
        self._buckets = [ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)]
        self._maxes = [bucket[-1] for bucket in self._buckets]
        self._size = len(ordered)
        self._reindex()

    def __len__(self) -> int:
        return self._size

    def __contains__(self, value: int) -> bool:
        b = bisect_left(self._maxes, value)
        if b == len(self._maxes):
            return False
        bucket = self._buckets[b]
        return bucket[bisect_left(bucket, value)] == value

    def add(self, value: int) -> bool:
        """Insert `value`; False when it was there already."""
        maxes = self._maxes
        if not maxes:
            self._buckets, self._maxes, self._size = [[value]], [value], 1
            self._reindex()
            return True
        b = min(bisect_left(maxes, value), len(maxes) - 1)  # past the last bucket: append to it
        bucket = self._buckets[b]
        i = bisect_left(bucket, value)
        if i < len(bucket) and bucket[i] == value:
            return False
        bucket.insert(i, value)
        maxes[b] = bucket[-1]
        self._size += 1
        if len(bucket) > 2 * LOAD:
            self._buckets[b : b + 1] = [bucket[:LOAD], bucket[LOAD:]]
            maxes[b : b + 1] = [bucket[LOAD - 1], bucket[-1]]
            self._reindex()  # O(buckets), once per LOAD inserts at most
        else:
            self._grow(b)
        return True

    def discard(self, value: int) -> bool:
        """Remove `value`; False when it was not there."""
        maxes = self._maxes
        b = bisect_left(maxes, value)
        if b == len(maxes):
            return False
        bucket = self._buckets[b]
        i = bisect_left(bucket, value)
        if bucket[i] != value:
            return False
        del bucket[i]
        self._size -= 1
        if bucket:
            maxes[b] = bucket[-1]
            self._grow(b, -1)
        else:  # an empty bucket goes (bisects over `maxes` need a value per bucket)
            del self._buckets[b], maxes[b]
            self._reindex()
        return True

    def copy(self) -> SortedInts:
        """An independent copy, without sorting again: one list copy per bucket."""
        twin = SortedInts()
        twin._buckets = [bucket[:] for bucket in self._buckets]
        twin._maxes, twin._size, twin._tree = self._maxes[:], self._size, self._tree[:]
        return twin

    def rank(self, value: int) -> int:
        """How many values lie below `value`."""
        b = bisect_left(self._maxes, value)
        if b == len(self._maxes):
            return self._size
        return self._before(b) + bisect_left(self._buckets[b], value)

    def count(self, lo: int, hi: int) -> int:
        """How many values lie in [lo, hi]."""
        return self.rank(hi + 1) - self.rank(lo) if lo <= hi else 0

    def between(self, lo: int, hi: int) -> list[int]:
        """The values in [lo, hi], in order."""
        found: list[int] = []
        buckets = self._buckets
        for b in range(bisect_left(self._maxes, lo), len(buckets)):
            bucket = buckets[b]
            if bucket[0] > hi:
                break
            found += bucket[bisect_left(bucket, lo) : bisect_right(bucket, hi)]
        return found

    def _reindex(self) -> None:
        """Build the Fenwick tree over the bucket sizes: tree[i] sums the `i & -i` buckets ending at i - 1."""
        tree = [0, *map(len, self._buckets)]
        for i in range(1, len(tree)):
            parent = i + (i & -i)
            if parent < len(tree):
                tree[parent] += tree[i]
        self._tree = tree

    def _grow(self, b: int, by: int = 1) -> None:
        tree, i = self._tree, b + 1
        while i < len(tree):
            tree[i] += by
            i += i & -i

    def _before(self, b: int) -> int:
        """How many values the buckets before bucket `b` hold."""
        tree, total = self._tree, 0
        while b:
            total += tree[b]
            b &= b - 1
        return total
