"""``@record``: a dataclass that is cheaper to *define*.

Python 3.11's ``@dataclass`` compiles every method it adds with a separate ``exec``: ``__init__``,
``__repr__`` and ``__eq__`` (plus ``__hash__``, ``__setattr__`` and ``__delattr__`` when frozen).
The recipe layer defines ~40 dataclasses, so importing it spent most of its time compiling those
(~45 ms, paid by the first parse of every recipe folder). ``@record`` compiles the ``__init__`` of a
class only when the first instance is made (the same code a dataclass would have: object creation
stays as fast; a class never instantiated in a process never compiles one) and gives ``__repr__``,
``__eq__`` and ``__hash__`` as shared functions with the dataclass semantics: the same text, equality between
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


_FACTORY = object()  # default of an argument whose field has a default_factory


def _init_source(fields: tuple, frozen: bool, post_init: bool) -> tuple[str, dict]:
    """Source of the ``__init__`` a dataclass would generate for ``fields``, and its globals."""
    env: dict[str, Any] = {"_FACTORY": _FACTORY}
    args, body = ["__record_self__"], []
    for f in fields:
        name, value = f.name, f.name
        if f.default is not dataclasses.MISSING:
            env[f"_dflt_{name}"] = f.default
            default = f"_dflt_{name}"
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_fact_{name}"] = f.default_factory
            default, value = "_FACTORY", f"_fact_{name}() if {name} is _FACTORY else {name}"
        else:
            default = None
        if not f.init:  # not an argument: always the default
            value = f"_fact_{name}()" if default == "_FACTORY" else default
        else:
            args.append(name if default is None else f"{name}={default}")
        if value is not None:
            body.append(f"__record_dict__[{name!r}] = {value}" if frozen else f"__record_self__.{name} = {value}")
    if frozen:
        body.insert(0, "__record_dict__ = __record_self__.__dict__")
    if post_init:
        body.append("__record_self__.__post_init__()")
    return f"def __init__({', '.join(args)}):\n    " + "\n    ".join(body or ["pass"]) + "\n", env


def _lazy_init(cls: type, frozen: bool) -> Callable[..., None]:
    """An ``__init__`` that compiles the real one, puts it on ``cls`` and runs it (first instance)."""
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        source, env = _init_source(dataclasses.fields(cls), frozen, hasattr(cls, "__post_init__"))
        exec(source, env)  # noqa: S102 - our own source text, built from field names
        init = env["__init__"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        init.__module__ = cls.__module__
        cls.__init__ = init  # type: ignore[misc]
        init(self, *args, **kwargs)

    return __init__


def _check_order(cls: type) -> None:
    seen_default = False
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if seen_default and not has_default:  # what @dataclass says when it compiles __init__
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default


def _make(cls: type, frozen: bool, kwargs: dict) -> type:
    own_eq = "__eq__" in cls.__dict__
    own_hash = "__hash__" in cls.__dict__
    lazy = "__init__" not in cls.__dict__ and kwargs.get("init", True)
    cls = dataclasses.dataclass(cls, repr=False, eq=False, **{**kwargs, "init": False})
    fields = dataclasses.fields(cls)
    if lazy:
        initvar = getattr(dataclasses, "_FIELD_INITVAR", None)
        if any(f.kw_only is True or getattr(f, "_field_type", None) is initvar
               for f in cls.__dataclass_fields__.values()):
            raise TypeError(f"{cls.__qualname__}: @record supports plain fields only (no InitVar, "
                            "kw_only): use @dataclass")
        _check_order(cls)
        cls.__init__ = _lazy_init(cls, frozen)  # type: ignore[misc]
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
