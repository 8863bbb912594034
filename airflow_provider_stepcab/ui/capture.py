"""Build and push the ``stepcab_step`` record of a resolved step (called where a step finishes or
is skipped, :mod:`..operators.running`).

The resolver does not yet say where each value came from; until it does (a ``sources`` mapping
on the resolved step), :func:`value_sources` tells it from what the step was given: the run
conf's per-step params, the recipe step's own params (a formula when it is one), a recipe
input passed down by alias (the run conf when that input was set in it, ``assign`` when the
recipe assigned it), the cab default, else the step itself (outputs it produced).
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any

from airflow_provider_stepcab.ui.records import STEP_KEY, cab_doc, image_name, step_record


def _is_formula(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("=") and not value.startswith("==")


def _alias_names(level: Any, label: str, cab_name: str) -> dict:
    """``{step param: recipe input}`` passed down to step ``label`` of recipe ``level``."""
    out = {}
    for alias, targets in (getattr(level, "aliases", None) or {}).items():
        for target in targets if isinstance(targets, (list, tuple)) else [targets]:
            spec, _, pname = str(target).partition(".")
            if spec == label or fnmatch.fnmatchcase(label, spec) or spec == f"({cab_name})":
                out[pname] = alias
    return out


def _recipe(op: Any) -> Any:
    from airflow_provider_stepcab.recipe.api import load_recipe

    try:
        return load_recipe(op.recipe_file, op.recipe_name)[0]  # cached by file content
    except Exception:  # noqa: BLE001 - the record is informative; never fail the task for it
        return None


def _level_of(recipe: Any, step_path: tuple) -> Any:
    """The recipe holding the step at ``step_path``, or ``None``."""
    for label in step_path[:-1]:
        recipe = recipe.steps[label].recipe if recipe is not None else None
    return recipe


def _set_in_conf(level: Any, name: str, conf: dict) -> bool:
    """True if the run conf gives recipe input ``name`` a value other than its default (the
    trigger form sends every input, changed or not)."""
    if name not in conf:
        return False
    schema = (getattr(level, "inputs", None) or {}).get(name)
    default = (getattr(level, "defaults", None) or {}).get(name, getattr(schema, "default", None))
    return conf[name] != default


def value_sources(step: Any, recipe: Any, conf: dict, conf_params: dict) -> dict:
    """``{param: source}`` for every parameter of the resolved ``step`` (module docstring).

    :param recipe: the top recipe (``None``: unknown, aliases are not told apart).
    :param conf: the DAG run's conf.
    :param conf_params: the run conf's per-step params of this step.
    """
    existing = getattr(step, "sources", None)
    if existing:
        return dict(existing)
    level = _level_of(recipe, step.step_path)
    label = step.step_path[-1]
    aliases = _alias_names(level, label, step.cab.name) if level is not None else {}
    top = len(step.step_path) == 1
    given = step.step.params or {}
    out = {}
    for name in step.params:
        schema = step.cab.inputs.get(name) or step.cab.outputs.get(name)
        alias = aliases.get(name, f"{label}.{name}")
        if name in conf_params:
            out[name] = "run conf"
        elif name in given:
            out[name] = "formula" if _is_formula(given[name]) else "recipe"
        elif name in aliases or (top and alias in conf):
            if top and _set_in_conf(level, alias, conf):
                out[name] = "run conf"
            elif level is not None and alias in (level.assign or {}):
                out[name] = "assign"
            else:
                out[name] = "alias"
        elif schema is not None and getattr(schema, "default", None) == step.params[name]:
            out[name] = "cab default"
        else:
            out[name] = "step"
    return out


def _argv(step: Any) -> list:
    import sys

    from airflow_provider_stepcab.plan.step_plan import native_command

    return native_command(step, python=sys.executable).command


def record_for(op: Any, step: Any, context: Any) -> dict:
    """The ``stepcab_step`` record of ``op``'s ``step`` running in ``context``."""
    from airflow_provider_stepcab.operators.resolve import plain

    from airflow_provider_stepcab.operators.overrides import parse_overrides
    from airflow_provider_stepcab.operators.resolve import plain_params

    conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
    recipe = _recipe(op)
    per_step: dict = {}
    if recipe is not None:
        overrides = parse_overrides(conf, recipe, plain_params(context.get("params")))
        per_step = overrides.params_for(step.step_path, step.step.cargo)
    outputs = []
    for name, p in step.cab.outputs.items():
        value = step.params.get(name)
        if p.dtype is not None and p.dtype.is_file and isinstance(value, str) and "://" not in value:
            outputs.append(os.path.normpath(step.workdir.resolve(value)))
    params = plain(step.params)
    return step_record(
        fqname=step.fqname, cab=step.cab.name, backend=step.backend_name, image=image_name(step.cab),
        workdir=str(step.workdir.path), argv=[] if step.skip_reason else _argv(step), command=None,
        params=params, sources={k: v for k, v in value_sources(step, recipe, conf, per_step).items() if k in params},
        outputs=outputs, skip_reason=step.skip_reason, doc=cab_doc(step.cab))


def push_step_record(op: Any, step: Any, context: Any) -> None:
    """Push :func:`record_for` as the ``stepcab_step`` XCom; a record that cannot be built is
    logged, never a task failure."""
    try:
        value = record_for(op, step, context)
    except Exception as exc:  # noqa: BLE001 - informative data only
        op.log.warning("stepcab: no step record for the UI: %s", exc)
        return
    context["ti"].xcom_push(key=STEP_KEY, value=value)
