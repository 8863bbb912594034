"""A parameter value as written in a recipe, evaluated: :func:`evaluate_value`.

``=...`` formulas (:mod:`.formula`), ``==...`` escapes, ``{}`` strings (:mod:`.subst`) and
lists/dicts element-wise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from .data import is_data
from .errors import FormulaError
from .formula import evaluate_formula
from .model import UNSET
from .subst import substitute

__all__ = ["evaluate_value"]


def _rebuild(original: Any, items: Any) -> Any:
    try:
        new = type(original)(items)
    except Exception:  # a container type that can't be rebuilt from items
        return items
    for attr in ("loc", "key_locs", "item_locs"):
        if hasattr(original, attr):
            try:
                setattr(new, attr, getattr(original, attr))
            except AttributeError:
                pass
    return new


def evaluate_value(value: Any, ns: Any, *, cwd: Optional[str] = None, log: Any = None) -> Any:
    """Evaluate a value as written in a recipe.

    * ``"=expr"`` → the formula's value (may be :data:`~.model.UNSET`: "unset this parameter");
    * ``"==text"`` → the literal ``"=text"`` (itself ``{}``-substituted, as Stimela does);
    * a string containing ``{`` → substituted;
    * a list/tuple/dict → evaluated element-wise (values only, not keys); an element
      evaluating to UNSET is an error, as in Stimela;
    * data (a trigger-time :class:`~.data.ConfValue`, see :func:`~.data.is_data`) and anything
      else are returned unchanged.

    :raises FormulaError: (or its subclass :class:`MissingNameError`) on any failure.
    """
    if isinstance(value, str):
        if is_data(value):
            return value
        if value.startswith("="):
            if value.startswith("=="):
                return substitute(value[1:], ns)
            return evaluate_formula(value, ns, cwd=cwd, log=log)
        return substitute(value, ns)
    if isinstance(value, (list, tuple)):
        items, changed = [], False
        for i, element in enumerate(value):
            new = evaluate_value(element, ns, cwd=cwd, log=log)
            if new is UNSET:
                raise FormulaError(f"list element [{i}] = {element!r}: UNSET not allowed here")
            changed = changed or new is not element
            items.append(new)
        return _rebuild(value, items) if changed else value
    if isinstance(value, Mapping):
        out, changed = {}, False
        for key, element in value.items():
            new = evaluate_value(element, ns, cwd=cwd, log=log)
            if new is UNSET:
                raise FormulaError(f"{key} = {element!r}: UNSET not allowed here")
            changed = changed or new is not element
            out[key] = new
        return _rebuild(value, out) if changed else value
    return value
