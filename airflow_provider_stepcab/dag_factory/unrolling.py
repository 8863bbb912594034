"""Which ``for_loop``s the DAG unrolls at parse time, and the recipe inputs that fixes.

Airflow can't map a TaskGroup inside a mapped one, so a loop that holds another loop is
*unrolled*: one TaskGroup per value, made when the DAG is parsed (the inner loop is mapped inside
each). That needs the outer loop's values at parse time:

- a literal list (``over: [3, 5]``), or
- the name of an input of the **top** recipe whose default is literal (``over: scans`` with
  ``scans: {default: [3, 5]}``, in the recipe's ``defaults`` or the input's own) and that the
  recipe's ``assign``/``assign_based_on`` doesn't set.

In the second case the DAG's shape is that default's: a run can't change the input
(:func:`fixed_inputs`; the run conf check, ``operators/overrides.py``, refuses another value before
any step runs, and the trigger form says so). ``stepcab run`` re-parses the recipe with the value
given, and ``stepcab plan`` resolves the loop with it, so both take any value.

Pure: no Airflow.
"""

from __future__ import annotations

from typing import Any, Optional

from airflow_provider_stepcab.recipe.model import UNSET


def has_nested_loop(recipe: Any) -> bool:
    """Does a step of ``recipe`` (at any depth) run a recipe with a ``for_loop``?"""
    return any(step.recipe is not None and (step.recipe.for_loop is not None or has_nested_loop(step.recipe))
               for step in recipe.steps.values())


def loop_input(recipe: Any, top: bool) -> Optional[str]:
    """The input whose literal default gives the values of ``recipe``'s ``for_loop`` at parse time
    (``top``: ``recipe`` is the DAG's top recipe; only its inputs' defaults are its values), or ``None``."""
    from airflow_provider_stepcab.recipe.deferred import contains_deferred
    from airflow_provider_stepcab.recipe.requirements import assigned_names

    over = recipe.for_loop.over if recipe.for_loop is not None else None
    if not top or not isinstance(over, str) or over not in recipe.inputs or over in assigned_names(recipe):
        return None
    value = (recipe.defaults or {}).get(over, recipe.inputs[over].default)
    if value is UNSET or value is None or contains_deferred(value):
        return None
    return over


def parse_time_values(recipe: Any, top: bool) -> Optional[list]:
    """The values of ``recipe``'s ``for_loop`` when known at parse time (see the module
    docstring), else ``None``. A scalar is a one-value loop, as Stimela iterates it."""
    over = recipe.for_loop.over if recipe.for_loop is not None else None
    if isinstance(over, (list, tuple)):
        return list(over)
    name = loop_input(recipe, top)
    if name is None:
        return None
    value = (recipe.defaults or {}).get(name, recipe.inputs[name].default)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def unrolls(recipe: Any, top: bool = False) -> bool:
    """A looping recipe is unrolled (one TaskGroup per iteration, made at parse time) when a loop
    inside it is mapped and its values are known at parse time; otherwise its group is mapped."""
    return has_nested_loop(recipe) and parse_time_values(recipe, top) is not None


def fixed_inputs(recipe: Any) -> dict:
    """``{input: default}`` of the top recipe's inputs that lay out the DAG (an unrolled loop's
    values): a run may not give them another value."""
    if recipe.for_loop is None or not unrolls(recipe, top=True):
        return {}
    name = loop_input(recipe, True)
    return {} if name is None else {name: (recipe.defaults or {}).get(name, recipe.inputs[name].default)}


def fixed_input_note(name: str) -> str:
    """Why input ``name`` can't be changed for one run (the form's description, the conf's error)."""
    return (f"'{name}' gives the values of the recipe's for_loop, which holds another loop: the DAG unrolls it "
            "into one TaskGroup per value when it is parsed, so its shape is fixed by the recipe's default; "
            "change the default in the recipe, or use `stepcab run`, which re-parses the recipe")
