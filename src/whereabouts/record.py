"""`record`: the part of `@dataclass` the CNI hot path uses, for a fraction of its start-up cost.

The plugin is a fresh process per CNI call: importing `dataclasses` (which pulls in inspect, ast, dis...) and
building a class with it cost more than the IPAM work itself. A record is a slotted class with a generated
`__init__` (the only method compiled, since it needs the real signature), and `__eq__`, `__hash__`,
`__repr__` and ordering shared by every record and driven by the field names. Same semantics as the
dataclass options used here: `frozen=True` (assignment raises `FrozenInstanceError`, an AttributeError, and
instances hash by their fields), `order=True`, and mutable records with `__hash__ = None`.

Not supported, as nothing here needs them: inheritance between records, `ClassVar` fields, zero-argument
`super()` in methods (the class is rebuilt with `__slots__`), and the `dataclasses` module functions
(`fields`, `replace`, `asdict`). Type checkers see `dataclasses.dataclass` and `dataclasses.field`.
"""

from __future__ import annotations

from operator import attrgetter, eq, ge, gt, le, lt

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
_NO_DEFAULT = object()


def _build(cls: type, frozen: bool, order: bool) -> type:
    # The class's own annotations, in order: `inspect.get_annotations` would import inspect, what this avoids.
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    names = tuple(annotations)
    body = {k: v for k, v in cls.__dict__.items() if k not in names and k not in ("__dict__", "__weakref__")}
    body.update(__slots__=names, __match_args__=names, __qualname__=cls.__qualname__)
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    key = _key(names)
    init = _init(cls.__qualname__, names, defaults, frozen)
    init.__annotations__ = {**annotations, "return": None}
    methods: dict[str, object] = {"__init__": init, "__repr__": _repr(names), "__eq__": _compare(key, eq)}
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


def _init(qualname: str, names: tuple[str, ...], defaults: dict[str, Any], frozen: bool) -> Callable[..., None]:
    """Compile `__init__(self, <fields>)`: the one generated method, as it needs the fields' signature."""
    params, lines, after_default = [], [], False
    namespace = {"_setattr": object.__setattr__, "_FACTORY": _FACTORY}
    for name in names:
        default = defaults.get(name, _NO_DEFAULT)
        value = name
        if isinstance(default, _FieldFactory):
            namespace[f"_make_{name}"] = default.make
            params.append(f"{name}=_FACTORY")
            value = f"_make_{name}() if {name} is _FACTORY else {name}"
        elif default is not _NO_DEFAULT:
            namespace[f"_dflt_{name}"] = default
            params.append(f"{name}=_dflt_{name}")
        elif after_default:
            raise TypeError(f"non-default argument {name!r} follows default argument in {qualname}")
        else:
            params.append(name)
        after_default = after_default or default is not _NO_DEFAULT
        lines.append(f"_setattr(self, {name!r}, {value})" if frozen else f"self.{name} = {value}")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(lines or ["pass"])
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{qualname}.__init__"
    return init


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
