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
"""

from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException


def loop_values(recipe: Any, loaded: Any, step_path: Sequence[str], recipe_params: dict, overrides: Any,
                fetch: Any, recipe_name: str, run_values: Any = None) -> list:
    """Values of the ``for_loop`` of the recipe at ``step_path`` (``()`` = the top recipe).

    :param run_values: extra ``config.run`` values (``operators.resolve.dag_run_values``).
    """
    from airflow_provider_stepcab.operators import resolve as R

    config = R.config_namespace(getattr(loaded, "tree", None), run_values)
    walker = R._Walker(fetch=fetch, recipe_name=recipe_name, loop_value=None, loop_index=None)
    level, given, parent, root = recipe, dict(recipe_params), {}, None
    path: tuple = ()
    for depth in range(len(step_path) + 1):
        base = {"config": config, "parent": parent, "info": R.info_namespace(recipe_name, path)}
        base["self"] = base["info"]
        where = ".".join((recipe_name,) + path)
        rparams = R._recipe_level(level, given, {**base, "root": root or dict(given)}, where)
        root = rparams if root is None else root
        if depth == len(step_path):
            break
        label = step_path[depth]
        labels = list(level.steps)
        steps_ns = {lbl: walker.sibling_params(level, path, lbl, depth) for lbl in labels[:labels.index(label)]}
        step = level.steps[label]
        raw = R._alias_inputs(level, label, step, rparams)
        raw.update(step.params)
        raw.update(overrides.params_for(path + (label,), step.cargo))
        ns = {**base, "recipe": rparams, "root": root, "steps": steps_ns,
              "previous": steps_ns[labels[labels.index(label) - 1]] if steps_ns else {}}
        given = R.resolve_params(step.cargo, raw, ns, where=".".join((recipe_name,) + path + (label,)))
        parent, level, path = rparams, step.recipe, path + (label,)
    over = level.for_loop.over
    if isinstance(over, (list, tuple)):
        value = list(over)
    elif isinstance(over, str) and over in level.inputs:
        value = rparams.get(over)
    else:
        value = R._evaluate(over, {"config": config, "recipe": rparams, "root": root, "parent": parent})
    if value is None:
        raise AirflowException(f"{'.'.join((recipe_name,) + path)}: for_loop.over={over!r} has no value")
    return list(value) if isinstance(value, (list, tuple)) else [value]


class StepcabLoopValuesOperator(BaseOperator):
    """Compute the list a recipe's ``for_loop`` iterates over (see the module docstring).

    :param recipe_file: absolute path of the recipe file.
    :param recipe_name: the top recipe.
    :param step_path: labels down to the looping recipe step (empty for the top recipe).
    """

    ui_color = "#f0ead6"

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Sequence[str], **kwargs: Any):
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        self.recipe_file, self.recipe_name, self.step_path = str(recipe_file), recipe_name, tuple(step_path)

    def execute(self, context: Any) -> list:
        from airflow_provider_stepcab.operators import resolve as R
        from airflow_provider_stepcab.operators.running import XComReader, plain_params
        from airflow_provider_stepcab.operators.overrides import parse_overrides
        from airflow_provider_stepcab.recipe.api import load_recipe

        recipe, loaded = load_recipe(self.recipe_file, self.recipe_name)
        conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
        overrides = parse_overrides(conf, recipe, plain_params(context.get("params")), config_tree=loaded.tree)
        xcom = XComReader(self, context["ti"], -1)
        try:
            values = loop_values(recipe, loaded, self.step_path, overrides.recipe_params, overrides,
                                 xcom.fetch, self.recipe_name,
                                 run_values=R.dag_run_values(context.get("dag_run")))
        except AirflowException:
            raise
        except Exception as exc:  # noqa: BLE001 - recipe/formula errors become a task failure
            raise AirflowException(f"for_loop of {'.'.join((self.recipe_name,) + self.step_path)}: {exc}") from None
        self.log.info("for_loop values: %r", values)
        return values
