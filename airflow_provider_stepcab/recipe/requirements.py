"""Required recipe inputs that nothing in the recipe sets: the user must give them at run time.

Stimela only finds these when a run starts (``missing required parameter``); ``stepcab validate``
lists them beforehand as notes, and the DAG trigger form shows them as required fields.

An input counts as *set* when it has a default (its own, or one taken over from the step parameter
it aliases: a value in the step's ``params`` or the cab's ``defaults``), when it is implicit, or when
the recipe's ``assign`` or any case of its ``assign_based_on`` assigns it. Auto-aliased step
parameters (``label.param``) are recipe inputs like the others, so they are included.
"""

from __future__ import annotations

from typing import Any, Iterator

from .errors import Loc
from .model import UNSET, Recipe


def assigned_names(recipe: Recipe) -> set:
    """Names the recipe's ``assign`` and every case of its ``assign_based_on`` give a value to."""
    names = set(recipe.assign or {})
    for cases in (recipe.assign_based_on or {}).values():
        if isinstance(cases, dict):
            for block in cases.values():
                if isinstance(block, dict):
                    names.update(block)
    return {str(n) for n in names}


def _has_value(p: Any) -> bool:
    if p.default is not UNSET:  # a default of None is a value too (Stimela passes it on)
        return True
    return p.implicit is not UNSET and p.implicit is not None


def _unset_inputs(recipe: Recipe) -> Iterator[tuple[str, Loc]]:
    assigned = assigned_names(recipe)
    for name, p in recipe.inputs.items():
        if not p.required or _has_value(p) or name in recipe.defaults:
            continue
        if name in assigned:
            continue
        yield name, p.loc


def required_unset(recipe: Recipe) -> list[tuple[str, Loc]]:
    """Required inputs of ``recipe`` that nothing sets, in schema order.

    :param recipe: a built recipe (aliases finalised, as :func:`.recipes.build_recipe` returns it).
    :returns: ``(name, loc)`` pairs: the parameter name as the recipe exposes it (``obs`` or
        ``step.param`` for an auto-alias) and where it is declared (the step, for an auto-alias).
    """
    return list(_unset_inputs(recipe))
