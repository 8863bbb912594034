"""Values that are data: typed by someone who may trigger a run, never evaluated.

Recipe files are code (their authors are trusted); a DAG run's ``conf`` and the trigger form are
not. A value that came from there is wrapped by :func:`as_data`: strings become :class:`ConfValue`
(a ``str`` subclass, so every string operation and dtype check works unchanged) inside lists and
mappings too. :func:`is_data` tells an evaluator to take the value as it is: no ``=formula``, no
``{}`` substitution, no second substitution when a recipe string looks it up (see
``docs/security.md``).

Pure: no Airflow, no I/O.
"""

from __future__ import annotations

from typing import Any


class ConfValue(str):
    """A string from the run conf or the trigger form: a literal, never a formula or template.

    ``str(v)`` gives a plain ``str``; JSON, pickling and comparisons see an ordinary string.
    """

    __slots__ = ()

    def __reduce__(self):
        return (ConfValue, (str(self),))


def as_data(value: Any) -> Any:
    """``value`` with every string in it (list items, mapping values) a :class:`ConfValue`."""
    if isinstance(value, str):
        return value if isinstance(value, ConfValue) else ConfValue(value)
    if isinstance(value, (list, tuple)):
        items = [as_data(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: as_data(v) for k, v in value.items()}
    return value


def is_data(value: Any) -> bool:
    """True when evaluating ``value`` must leave it unchanged: it holds no string that is not a
    :class:`ConfValue` (numbers, booleans and ``None`` are never evaluated anyway)."""
    if isinstance(value, str):
        return isinstance(value, ConfValue)
    if isinstance(value, (list, tuple)):
        return all(is_data(v) for v in value)
    if isinstance(value, dict):
        return all(is_data(v) for v in value.values())
    return True


__all__ = ["ConfValue", "as_data", "is_data"]
