"""`record`: the part of `@dataclass` the CNI hot path uses, for a fraction of its start-up cost.

The plugin is a fresh process per CNI call: importing `dataclasses` (which pulls in inspect, ast, dis...) and
building a class with it cost more than the IPAM work itself. A record is a slotted class whose methods are
closures over its field names: nothing is compiled from source. Same semantics as the dataclass options used
here: `__init__` taking the fields positionally or by keyword, defaults and `field(default_factory=...)`,
`__eq__` and `__repr__`, `frozen=True` (assignment raises `FrozenInstanceError`, an AttributeError, and
instances hash by their fields), `order=True`, and mutable records with `__hash__ = None`.

Not supported, as nothing here needs them: inheritance between records, `ClassVar` fields, zero-argument
`super()` in methods (the class is rebuilt with `__slots__`), and the `dataclasses` module functions
(`fields`, `replace`, `asdict`). Type checkers see `dataclasses.dataclass` and `dataclasses.field`.
"""

from __future__ import annotations

from operator import attrgetter, eq, ge, gt, le, lt

# The public names; listed so that type checkers see `record` and `field` (dataclass and field under
# TYPE_CHECKING, imported under other names or from another module) as exported from here.
__all__ = ["FrozenInstanceError", "field", "record"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name

if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import dataclass as record
    from dataclasses import field
    from typing import Any

    Key = Callable[[Any], tuple[Any, ...]]
else:

    def record(cls=None, /, *, frozen=False, order=False):
        """Class decorator: `@record`, `@record(frozen=True)`, `@record(frozen=True, order=True)`."""

        def wrap(cls):
            return _build(cls, frozen, order)

        return wrap if cls is None else wrap(cls)

    def field(*, default_factory):
        """A field whose default is made fresh for each instance, as `dataclasses.field(default_factory=...)`."""
        return _FieldFactory(default_factory)


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class _FieldFactory:
    """What `field(default_factory=...)` leaves in the class body."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class _FactoryDefault:
    """The parameter default that stands for a factory-made value in a generated `__init__`."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _FactoryDefault()
_MISSING = object()


def _build(cls: type, frozen: bool, order: bool) -> type:
    # The class's own annotations, in order: `inspect.get_annotations` would import inspect, what this avoids.
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    names = tuple(annotations)
    defaults = tuple(cls.__dict__[name] for name in names if name in cls.__dict__)
    required = len(names) - len(defaults)
    late = [name for name in names[required:] if name not in cls.__dict__]
    if late:
        raise TypeError(f"non-default argument {late[0]!r} follows default argument in {cls.__qualname__}")
    body = {k: v for k, v in cls.__dict__.items() if k not in names and k not in ("__dict__", "__weakref__")}
    body.update(__slots__=names, __match_args__=names, __qualname__=cls.__qualname__)
    body["__signature__"] = _Signature(names, defaults, annotations)
    key = _key(names)
    methods: dict[str, object] = {"__init__": _init(cls.__qualname__, names, defaults)}
    methods.update(__repr__=_repr(names), __eq__=_compare(key, eq))
    methods["__hash__"] = (lambda self: hash(key(self))) if frozen else None
    if frozen:
        methods.update(__setattr__=_frozen_setattr, __delattr__=_frozen_delattr)
        methods.update(__getstate__=lambda self: key(self), __setstate__=_setstate(names))
    if order:
        methods.update(__lt__=_compare(key, lt), __le__=_compare(key, le))
        methods.update(__gt__=_compare(key, gt), __ge__=_compare(key, ge))
    for name, method in methods.items():
        body.setdefault(name, method)  # what the class defines itself wins, as with dataclasses
    return type(cls)(cls.__name__, cls.__bases__, body)


def _key(names: tuple[str, ...]) -> Key:
    """The fields as a tuple, compared and hashed as dataclasses do."""
    if len(names) > 1:
        return attrgetter(*names)
    return lambda self: tuple(getattr(self, name) for name in names)


def _init(qualname: str, names: tuple[str, ...], defaults: tuple[Any, ...]) -> Callable[..., None]:
    """`__init__(self, *args, **kwargs)` taking the fields as a generated `__init__(self, <fields>)` would,
    with the same TypeErrors. Not compiled from source: `exec` would cost 50-300 us per class at start-up,
    several times the difference it makes to building an instance."""
    count, index, required = len(names), {name: i for i, name in enumerate(names)}, len(names) - len(defaults)
    setattr_ = object.__setattr__  # past a frozen record's own __setattr__
    plain_defaults = not any(isinstance(default, _FieldFactory) for default in defaults)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        values = bind(args, kwargs) if kwargs or len(args) != count else args
        for name, value in zip(names, values):  # noqa: B905 (as long by now; strict= would slow every call)
            setattr_(self, name, value)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | list[Any]:
        if not kwargs and required <= len(args) < count and plain_defaults:
            return args + defaults[len(args) - required :]  # the common short call, e.g. PoolKey(net, cidr)
        values = [*args[:count], *[_MISSING] * (count - len(args))]
        for name, value in kwargs.items():
            i = index.get(name)
            if i is None:
                raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {name!r}")
            if values[i] is not _MISSING:
                raise TypeError(f"{qualname}.__init__() got multiple values for argument {name!r}")
            values[i] = value
        if len(args) > count:
            takes = f"from {required + 1} to {count + 1}" if defaults else f"{count + 1}"
            raise TypeError(f"{qualname}.__init__() takes {takes} positional arguments but {len(args) + 1} were given")
        missing = [repr(name) for name, value in zip(names[:required], values, strict=False) if value is _MISSING]
        if missing:
            listed = " and ".join(missing) if len(missing) < 3 else f"{', '.join(missing[:-1])}, and {missing[-1]}"
            arguments = "arguments" if len(missing) > 1 else "argument"
            raise TypeError(f"{qualname}.__init__() missing {len(missing)} required positional {arguments}: {listed}")
        for i, default in enumerate(defaults, required):
            if values[i] is _MISSING:
                values[i] = default.make() if isinstance(default, _FieldFactory) else default
        return values

    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


class _Signature:
    """`inspect.signature()` of a record class, as for a dataclass; built when asked, since importing
    inspect up front is what records avoid."""

    def __init__(self, names: tuple[str, ...], defaults: tuple[Any, ...], annotations: dict[str, Any]) -> None:
        self.names, self.defaults, self.annotations = names, defaults, annotations

    def __get__(self, instance: object, owner: type) -> Any:
        from inspect import Parameter, Signature

        defaults = [_FACTORY if isinstance(d, _FieldFactory) else d for d in self.defaults]
        defaults = [Parameter.empty] * (len(self.names) - len(defaults)) + defaults
        kind = Parameter.POSITIONAL_OR_KEYWORD
        params = [
            Parameter(name, kind, default=default, annotation=self.annotations[name])
            for name, default in zip(self.names, defaults, strict=True)
        ]
        return Signature(params, return_annotation=None)


def _repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({fields})"

    return __repr__


def _setstate(names: tuple[str, ...]) -> Callable[[Any, tuple[Any, ...]], None]:
    def __setstate__(self: Any, state: tuple[Any, ...]) -> None:
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)

    return __setstate__


def _compare(key: Key, op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def compare(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return op(key(self), key(other))
        return NotImplemented

    return compare


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")
