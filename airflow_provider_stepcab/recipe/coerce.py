"""Coercing YAML values to typed fields the way OmegaConf does for Stimela's structured configs.

Stimela 2.1.4 reads cab schemas (``Parameter``, ``ParameterPolicies``) and backend options through
OmegaConf dataclass schemas, which convert rather than reject many values: ``repeat: false``
becomes the string ``"False"``, ``positional: "yes"`` becomes ``True``, ``format_list: [1]``
becomes ``["1"]``. :func:`coerce` reproduces those verdicts, so a file Stimela accepts is
accepted here and one it rejects is rejected.
"""

from __future__ import annotations

import typing
from typing import Any, Dict, List, Union

_TRUE = ("y", "yes", "on", "true")
_FALSE = ("n", "no", "off", "false")


def type_name(tp: Any) -> str:
    """``str``, ``Dict[str, str]`` ... for messages."""
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp)


def value_name(value: Any) -> str:
    """``bool False``, ``str 'x'`` ... for messages."""
    kind = next((t.__name__ for t in (bool, int, float, str, dict, list) if isinstance(value, t)),
                type(value).__name__)
    return f"{kind} {value!r}"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        try:
            return int(value) != 0
        except ValueError:
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
    raise ValueError(f"expected a bool, got {value_name(value)}")


def _number(kind: type) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        raise ValueError(f"expected a{'n' if kind is int else ''} {kind.__name__}, got {value_name(value)}")
    return convert


def _str(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        raise ValueError(f"expected a string, got {value_name(value)}")
    return value if isinstance(value, str) else str(value)


_SCALARS = {bool: _bool, int: _number(int), float: _number(float), str: _str}


def coerce(tp: Any, value: Any) -> Any:
    """Coerce ``value`` to annotation ``tp`` like OmegaConf; raise :class:`ValueError` if it can't.

    Containers are converted element by element (``Dict[str, str]``, ``List[str]``); dataclass
    and ``Any`` annotations leave the value as it is.
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        if len(args) == 1:
            return coerce(args[0], value)
        # OmegaConf's union nodes convert nothing: the value must already be one of the types
        for arg in args:
            if arg in _SCALARS and type(value) is arg:
                return value
        for arg in args:  # container members (only in our own option types)
            if arg not in _SCALARS:
                try:
                    return coerce(arg, value)
                except ValueError:
                    pass
        raise ValueError(f"expected {type_name(tp)}, got {value_name(value)}")
    if value is None:
        raise ValueError(f"expected {type_name(tp)}, got null")
    if tp in _SCALARS:
        return _SCALARS[tp](value)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value_name(value)}")
        args = typing.get_args(tp)
        if not args:
            return value
        ktp, vtp = args
        if ktp is str and any(not isinstance(k, str) for k in value):
            bad = next(k for k in value if not isinstance(k, str))
            raise ValueError(f"key {bad!r} ({type(bad).__name__}) is not a string")
        return {k: coerce(vtp, v) for k, v in value.items()}
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value_name(value)}")
        args = typing.get_args(tp)
        return [coerce(args[0], v) for v in value] if args else list(value)
    return value
