"""Where a resolved parameter's value came from: the ``sources`` the resolver
(:class:`~.resolve.Resolver`) records beside every value, shown by the Step view.

One of :data:`SOURCES`:

``run conf``         given at trigger time (run conf, trigger form, a :class:`~.data.ConfValue`)
``recipe``           written in the recipe (the step's ``params``, the recipe's ``defaults`` or an
                     input's ``default``, a ``label.param`` given to a sub-recipe)
``formula``          an ``=formula`` written in the recipe, evaluated
``substitution``     a string with ``{}`` substitutions written in the recipe, evaluated
``alias``            passed down from a recipe input through an alias
``assign``           the recipe's (or step's) ``assign`` block
``assign_based_on``  a case of an ``assign_based_on`` block
``loop``             the ``for_loop`` variable
``cab default``      the cab's default for the parameter
``implicit``         the cab's ``implicit`` value
``step``             produced by the step itself (an output it reported)

A value passed down by alias keeps the source of the recipe input when that is ``run conf``,
``assign``, ``assign_based_on`` or ``loop`` (what a user changed or the recipe decided), else it
is ``alias``. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from .validate import has_substitution, is_formula_text

SOURCES = ("run conf", "recipe", "formula", "substitution", "alias", "assign", "assign_based_on", "loop",
           "cab default", "implicit", "step")
#: recipe-input sources an alias passes down unchanged
KEPT_BY_ALIAS = ("run conf", "assign", "assign_based_on", "loop")


def written_source(value: Any, *, data: bool = False) -> str:
    """The source of ``value`` as given: ``run conf`` for trigger-time ``data`` (the resolver's
    :class:`~.data.ConfValue`), else what the recipe wrote: ``formula`` when it (or an item of
    it) is one, ``substitution`` likewise, else ``recipe``."""
    if data:
        return "run conf"
    items = _leaves(value)
    if any(is_formula_text(v) for v in items):
        return "formula"
    if any(has_substitution(v) for v in items):
        return "substitution"
    return "recipe"


def _leaves(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [value]


def alias_source(input_source: str) -> str:
    """The source of a step parameter given by alias from a recipe input of ``input_source``."""
    return input_source if input_source in KEPT_BY_ALIAS else "alias"


def default_source(schema: Any, *, from_defaults: bool, cab: bool) -> str:
    """The source of a parameter the resolver filled in (not given): from the cargo's
    ``defaults`` (``from_defaults``) or the schema's ``default`` → ``cab default`` for a cab,
    ``recipe`` for a recipe; else its ``implicit`` value."""
    from .model import UNSET

    if from_defaults or (schema.default is not UNSET and schema.default != "UNSET"):
        return "cab default" if cab else "recipe"
    return "implicit"


__all__ = ["SOURCES", "KEPT_BY_ALIAS", "alias_source", "default_source", "written_source"]
