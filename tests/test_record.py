"""`record` against `dataclasses.dataclass`: the same class body must behave the same under either."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest

from whereabouts.record import FrozenInstanceError, field, record


def make(decorate, **options):
    """One class body, decorated by `record` or `dataclass` with the same options."""

    @decorate(**options)
    class Point:
        """A point."""

        x: int
        y: str
        tags: tuple[str, ...] = ()

        @property
        def label(self) -> str:
            return f"{self.x}:{self.y}"

    return Point


def make_mutable(decorate, field):
    @decorate
    class Bag:
        key: str
        version: object = None
        items: dict[int, str] = field(default_factory=dict)

    return Bag


Frozen, FrozenDC = make(record, frozen=True), make(dataclasses.dataclass, frozen=True)
Ordered, OrderedDC = make(record, frozen=True, order=True), make(dataclasses.dataclass, frozen=True, order=True)
Bag, BagDC = make_mutable(record, field), make_mutable(dataclasses.dataclass, dataclasses.field)


@pytest.mark.parametrize(
    "args, kwargs",
    [((1, "a"), {}), ((1, "a", ("t",)), {}), ((), {"x": 2, "y": "b"}), ((3,), {"y": "c", "tags": ("u", "v")})],
    ids=["positional", "positional-default", "keywords", "mixed"],
)
def test_frozen_record_behaves_as_frozen_dataclass(args: tuple, kwargs: dict) -> None:
    ours, theirs = Frozen(*args, **kwargs), FrozenDC(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert hash(ours) == hash(theirs)
    assert ours == Frozen(*args, **kwargs) and ours != theirs  # a different class never compares equal
    assert ours.label == theirs.label and ours.__doc__ == theirs.__doc__
    assert str(inspect.signature(Frozen)) == str(inspect.signature(FrozenDC))
    assert Frozen.__match_args__ == FrozenDC.__match_args__ == ("x", "y", "tags")
    assert {ours: 1}[Frozen(*args, **kwargs)] == 1


def test_frozen_record_rejects_assignment_and_new_attributes() -> None:
    point = Frozen(1, "a")
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'x'"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        point.z = 2  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del point.y  # type: ignore[misc]
    assert issubclass(FrozenInstanceError, AttributeError)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((), {}),
        ((1,), {}),
        ((), {"tags": ()}),
        ((1, "a", (), 4), {}),
        ((1,), {"x": 1, "y": "a"}),
        ((1, "a"), {"z": 1}),
        ((1, "a", (), 4), {"x": 1}),
    ],
    ids=["missing-two", "missing-one", "missing-with-keyword", "too-many", "twice", "unknown", "twice-and-too-many"],
)
def test_wrong_arguments_fail_as_for_dataclasses(args: tuple, kwargs: dict) -> None:
    with pytest.raises(TypeError) as ours:
        Frozen(*args, **kwargs)
    with pytest.raises(TypeError) as theirs:
        FrozenDC(*args, **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_three_missing_arguments_are_listed_as_python_lists_them() -> None:
    @record
    class Three:
        a: int
        b: int
        c: int

    with pytest.raises(TypeError, match=r"missing 3 required positional arguments: 'a', 'b', and 'c'$"):
        Three()


def test_order_compares_field_tuples_within_one_class() -> None:
    values = [(2, "a"), (1, "b"), (1, "a", ("z",)), (1, "a")]
    assert [repr(p) for p in sorted(Ordered(*v) for v in values)] == [
        repr(p) for p in sorted(OrderedDC(*v) for v in values)
    ]
    assert Ordered(1, "a") <= Ordered(1, "a") < Ordered(1, "b") and Ordered(2, "a") >= Ordered(1, "z")
    with pytest.raises(TypeError):
        _ = Ordered(1, "a") < OrderedDC(1, "a")
    with pytest.raises(TypeError):
        _ = Frozen(1, "a") < Frozen(2, "a")  # no order=True: no ordering


def test_mutable_record_behaves_as_dataclass() -> None:
    ours, theirs = Bag("k"), BagDC("k")
    assert repr(ours) == repr(theirs) and repr(ours).endswith(".Bag(key='k', version=None, items={})")
    assert Bag("k").items is not ours.items  # a fresh default per instance
    ours.version, ours.items[1] = 7, "x"
    assert ours == Bag("k", 7, {1: "x"}) and ours != Bag("k")
    assert Bag.__hash__ is None and BagDC.__hash__ is None
    assert str(inspect.signature(Bag)) == str(inspect.signature(BagDC))
    with pytest.raises(AttributeError):
        ours.other = 1  # type: ignore[attr-defined]


@record(frozen=True)
class Pinned:  # module level, so pickle finds it by name
    a: int
    b: tuple[str, ...] = ()


def test_frozen_records_copy_and_pickle() -> None:
    point = Pinned(1, ("t",))
    for clone in (copy.copy(point), copy.deepcopy(point), pickle.loads(pickle.dumps(point))):
        assert clone == point and clone is not point


def test_a_field_without_default_after_one_with_is_an_error() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):

        @record(frozen=True)
        class Bad:
            a: int = 0
            b: int
