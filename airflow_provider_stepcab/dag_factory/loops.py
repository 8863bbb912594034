"""The small task that computes a ``for_loop``'s values at run time.

When ``for_loop.over`` is a literal list the DAG factory expands the loop's mapped TaskGroup over
that list at parse time. When it names an input of the looping recipe (or is a formula), the value
is only known for a given DAG run, so a :class:`StepcabLoopValuesOperator` task (id
``<label>__for_loop``, or ``stepcab_for_loop`` for a looping top recipe) runs right before the
group and returns the list; the group is expanded over that task's XCom.

The value is resolved like the operators resolve step params (``operators/resolve.py``): DAG
params/conf give the top recipe's params, defaults and ``assign`` fill in, and each level's step
params (formulas included, ``previous``/``steps.X`` read from earlier steps' XCom) give the next
level's params. A scalar result becomes a one-element list.

Each mapped instance is named by its loop value in the UI (``map_index_template``, rendered by
Airflow once the task's ``loop_value`` is resolved): ``scan=4``, ``band=L``
(:func:`map_index_template`).
"""

from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException


#: longest loop value shown in an instance's name (Airflow stores at most 250 characters)
MAX_NAME_VALUE = 200


def map_index_template(var: str) -> str:
    """The ``map_index_template`` of a task inside a mapped loop over ``var``: ``<var>=<value>``."""
    return f"{var}={{{{ task.loop_value | string | truncate({MAX_NAME_VALUE}) }}}}"


def loop_values(recipe: Any, loaded: Any, step_path: Sequence[str], recipe_params: dict, overrides: Any,
                fetch: Any, recipe_name: str, run_values: Any = None, loop_indices: Any = None) -> list:
    """Values of the ``for_loop`` of the recipe at ``step_path`` (``()`` = the top recipe), from the
    one recipe resolver walked as far as the loop's first step.

    :param run_values: extra ``config.run`` values (``operators.resolve.dag_run_values``).
    :param loop_indices: iterations of the unrolled loops around it (by recipe path).
    """
    from airflow_provider_stepcab.operators import resolve as R
    from airflow_provider_stepcab.recipe.errors import Problems
    from airflow_provider_stepcab.recipe.resolve import Resolver, Unresolved

    level = recipe
    for label in step_path:
        level = level.steps[label].recipe
    first = tuple(step_path)
    inner = level
    while inner is not None and inner.steps:
        label = next(iter(inner.steps))
        first += (label,)
        inner = inner.steps[label].recipe
    res = Resolver(getattr(loaded, "tree", None), Problems(), allow_io=True, target=first, loop_index=0,
                   config_ns=R.config_namespace(getattr(loaded, "tree", None), run_values),
                   step_params=None, fetch=R.StepFetcher(fetch), tag_skips=False, loop_indices=loop_indices)
    for _ in res.recipe(recipe, R.trigger_values(recipe, recipe_params), fqname=recipe_name):
        pass
    value = res.loops.get(tuple(step_path))
    if value is None or any(isinstance(v, Unresolved) for v in value):
        raise AirflowException(f"{'.'.join((recipe_name,) + tuple(step_path))}: for_loop.over="
                               f"{level.for_loop.over!r} has no value")
    return list(value)


class StepcabLoopValuesOperator(BaseOperator):
    """Compute the list a recipe's ``for_loop`` iterates over (see the module docstring).

    :param recipe_file: absolute path of the recipe file.
    :param recipe_name: the top recipe.
    :param step_path: labels down to the looping recipe step (empty for the top recipe).
    :param loop_indices: iterations of the unrolled loops around it; ``dag_loops``: every loop of
        the DAG (see :class:`~..operators.base.StepcabBaseOperator`).
    """

    ui_color = "#f0ead6"

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Sequence[str],
                 loop_indices: Any = None, dag_loops: Any = None, **kwargs: Any):
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        self.recipe_file, self.recipe_name, self.step_path = str(recipe_file), recipe_name, tuple(step_path)
        self.loop_indices, self.dag_loops = dict(loop_indices or {}), dict(dag_loops or {})

    def execute(self, context: Any) -> list:
        from airflow_provider_stepcab.operators import resolve as R
        from airflow_provider_stepcab.operators.running import XComReader, loop_indices_of, plain_params
        from airflow_provider_stepcab.operators.overrides import parse_overrides
        from airflow_provider_stepcab.recipe.api import load_recipe

        recipe, loaded = load_recipe(self.recipe_file, self.recipe_name)
        conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
        overrides = parse_overrides(conf, recipe, plain_params(context.get("params")), config_tree=loaded.tree)
        xcom = XComReader(self, context["ti"], -1)
        try:
            values = loop_values(recipe, loaded, self.step_path, overrides.recipe_params, overrides,
                                 xcom.fetch, self.recipe_name,
                                 run_values=R.dag_run_values(context.get("dag_run")),
                                 loop_indices=loop_indices_of(self))
        except AirflowException:
            raise
        except Exception as exc:  # noqa: BLE001 - recipe/formula errors become a task failure
            raise AirflowException(f"for_loop of {'.'.join((self.recipe_name,) + self.step_path)}: {exc}") from None
        self.log.info("for_loop values: %r", values)
        return values
