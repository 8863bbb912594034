"""The parameters each cab step accepts once the recipe is resolved with given values.

Most cabs have one schema whatever their values. A cab with a ``dynamic_schema`` gets more
parameters from its hook, for the values the step has (cult-cargo's quartical: ``K.type``,
``G.time_interval`` ... for each of ``solver.terms``). Which ones depends on everything that sets
the step's params: the recipe's inputs, aliases, ``assign``, and trigger-time values. Stimela
applies the hook at prevalidation, after all of them, and refuses a parameter the hook does not
add. :func:`accepted_schemas` walks the recipe with the one resolver (:class:`.resolve.Resolver`,
which runs the hook for every such step, see :func:`.dynamic_schema.apply_dynamic_schema`) and
reports each step's resulting schema, so that a trigger-time ``steps.<s>.params`` entry can be
checked as Stimela would check it on the command line.

Pure: no Airflow, no I/O (``GLOB``/``EXISTS`` stay unresolved).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from .errors import Problems
from .records import record


@record
class AcceptedSchema:
    """The schema one cab step (all its loop iterations) has after resolution.

    ``names``: parameter name → :class:`~.model.Parameter` (the first iteration's that has it);
    ``open``: the hook could not run with all of the step's values (one is known only at run time,
    or the hook can't run here), so a name missing from ``names`` may still be added then.
    """

    names: dict
    open: bool = False

    def get(self, name: str) -> Any:
        return self.names.get(name)

    def accepts(self, name: str) -> bool:
        return self.open or name in self.names


def accepted_schemas(recipe: Any, config_tree: Any, params: Mapping[str, Any],
                     step_params: Optional[Callable[[tuple, Any], Mapping]] = None) -> dict[tuple, AcceptedSchema]:
    """``{step path: AcceptedSchema}`` of every cab step of ``recipe`` resolved with ``params``
    (recipe inputs, ``label.param`` values) and ``step_params(path, cargo)`` (merged last into a
    step's params, as trigger-time overrides are). Values should be data (:func:`.data.as_data`)
    where they came from a user: they are passed to the hooks, never evaluated."""
    from .evaluation import _contains_unresolved
    from .resolve import Resolver

    res = Resolver(config_tree, Problems(), step_params=step_params)
    out: dict[tuple, AcceptedSchema] = {}
    for rs in res.recipe(recipe, dict(params), fqname=recipe.name):
        path = tuple(rs.path)
        written = step_at(recipe, path)
        cab = rs.step.cab
        ran = not cab.dynamic_schema or (written is not None and cab is not written.cab)
        unknown = any(_contains_unresolved(v) for v in rs.params.values())
        seen = out.setdefault(path, AcceptedSchema(names={}))
        for name, p in cab.schema.items():
            seen.names.setdefault(name, p)
        seen.open = seen.open or not ran or (bool(cab.dynamic_schema) and unknown)
    return out


def step_at(recipe: Any, path: tuple) -> Any:
    """The step of ``recipe`` at ``path`` (labels from the top), or ``None``."""
    step = None
    for label in path:
        step = recipe.steps.get(label) if recipe is not None else None
        recipe = step.recipe if step is not None else None
    return step
