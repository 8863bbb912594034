"""``@record``: a dataclass that is cheaper to *define*.

Python 3.11's ``@dataclass`` compiles every method it adds with a separate ``exec``: ``__init__``,
``__repr__`` and ``__eq__`` (plus ``__hash__``, ``__setattr__`` and ``__delattr__`` when frozen).
The recipe layer defines ~40 dataclasses, so importing it spent most of its time compiling those
(~45 ms, paid by the first parse of every recipe folder). ``@record`` keeps the generated
``__init__`` (object creation stays as fast as a dataclass's) and gives ``__repr__``, ``__eq__`` and
``__hash__`` as shared functions with the dataclass semantics: the same text, equality between
instances of the same class by their fields in order, hashes of frozen instances from those fields,
``__hash__ = None`` for mutable ones. A frozen record refuses to change a field once its
``__init__`` has set it (``FrozenInstanceError``) through one shared ``__setattr__`` too (a
dataclass compiles two more methods for that). A method the class defines itself is kept.
Everything else (``dataclasses.fields``, ``replace``, ``asdict``, pickling) works unchanged.
"""

from __future__ import annotations

import dataclasses
import reprlib
from operator import attrgetter
from typing import Any, Callable, Optional


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    names = type(self).__record_repr__
    return f"{type(self).__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = type(self).__record_key__
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(type(self).__record_key__(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    # the generated __init__ sets each field once; any later assignment is refused
    if name in self.__dict__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _key_of(names: tuple) -> Callable[[Any], tuple]:
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    return lambda obj: ()


def _set(cls: type, name: str, value: Any) -> None:
    if name not in cls.__dict__:
        setattr(cls, name, value)


def _make(cls: type, frozen: bool, kwargs: dict) -> type:
    own_eq = "__eq__" in cls.__dict__
    own_hash = "__hash__" in cls.__dict__
    cls = dataclasses.dataclass(cls, repr=False, eq=False, **kwargs)
    fields = dataclasses.fields(cls)
    cls.__record_repr__ = tuple(f.name for f in fields if f.repr)
    cls.__record_key__ = staticmethod(_key_of(tuple(f.name for f in fields if f.compare)))
    _set(cls, "__repr__", _repr)
    _set(cls, "__eq__", _eq)
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign, assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign, assignment]
    if not own_hash:
        if frozen:
            cls.__hash__ = _hash  # type: ignore[method-assign]
        elif not own_eq:
            cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared by value
    return cls


def record(cls: Optional[type] = None, /, *, frozen: bool = False, **kwargs: Any) -> Any:
    """Use like ``@dataclass`` / ``@dataclass(frozen=True)`` (see the module docstring); other
    keyword arguments go to :func:`dataclasses.dataclass` (``repr`` and ``eq`` are not accepted)."""
    if cls is None:
        return lambda c: _make(c, frozen, kwargs)
    return _make(cls, frozen, kwargs)
