"""Resolve one step of a recipe for a running DAG run (no Airflow import: XCom arrives via ``fetch``).

Walks ``step_path`` from the top recipe down, building at each level the ``recipe``
namespace (defaults, given params, ``assign``, loop variable), ``steps``/``previous``
(earlier siblings' resolved params, fetched from XCom) and the step's own params
(aliases, ``label.param`` recipe params, trigger-time overrides), evaluating formulas
and ``{}`` substitutions, ``skip``, selection and ``skip_if_outputs`` like Stimela's
per-step lifecycle. See :mod:`.base` for the Airflow side.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from airflow_provider_stepcab.recipe.data import as_data, is_data
from airflow_provider_stepcab.recipe.errors import FormulaError, Problems, RecipeError, UNKNOWN_LOC
from airflow_provider_stepcab.recipe.model import UNSET
from airflow_provider_stepcab.recipe.yamlio import to_plain

from airflow_provider_stepcab.operators.checks import (  # noqa: F401 - re-exported for the mechanisms
    _paths, evaluate as _evaluate, file_outputs, finalize_outputs, is_file, outputs_ready, prepare_outputs, validate_inputs)


@dataclass
class ResolvedStep:
    """Everything a mechanism needs to run one cab step (paths relative to ``workdir``)."""

    fqname: str
    step_path: tuple
    step: Any
    cab: Any
    params: dict
    ns: dict
    workdir: Any
    backend_name: str = "native"
    backend: Any = None                   # BackendOptions (formulas evaluated)
    backend_tree: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    skip_reason: Optional[str] = None
    config: Any = None                    # LoadedConfig


@contextlib.contextmanager
def chdir(path: Any):
    """Temporarily make ``path`` the current directory (formulas like ``GLOB``/``EXISTS`` use it)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def plain(value: Any) -> Any:
    """JSON-friendly copy of ``value`` (for XCom): tuples → lists, UNSET dropped."""
    value = to_plain(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if v is not UNSET}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _deferred(value: Any) -> bool:
    return isinstance(value, str) and not is_data(value) and (value.startswith("=") or "{" in value)


def config_namespace(tree: Any, run_values: Optional[dict] = None) -> dict:
    """The ``config`` namespace: the merged config plus ``config.run.*``.

    Stimela's ``config.run`` values (``date``, ``time``, ``datetime``: the wall clock now; ``ncpu``,
    ``node``, ``hostname``, ``env``) plus ``run_values`` (:func:`dag_run_values`: the DAG run's
    ``logical_date``, ``ds``, ``ds_nodash``).
    """
    now = datetime.datetime.now()
    ns = plain(tree) if tree else {}
    run = dict(ns.get("run") or {})
    run.update(date=now.strftime("%Y%m%d"), time=now.strftime("%H%M%S"),
               datetime=now.strftime("%Y%m%d-%H%M%S"), ncpu=os.cpu_count() or 1,
               node=platform.node().split(".")[0], hostname=platform.node(), env=dict(os.environ))
    run.update(run_values or {})
    ns["run"] = run
    return ns


def dag_run_values(dag_run: Any) -> dict:
    """``config.run`` values of an Airflow DAG run, for recipes (stepcab's, not Stimela's):

    * ``logical_date``: the run's logical date, ISO 8601 (``2024-01-02T00:00:00+00:00``);
    * ``ds``: its day, ``YYYY-MM-DD`` (Airflow's ``{{ ds }}``); ``ds_nodash``: ``YYYYMMDD``.

    A run triggered without a logical date uses its ``run_after`` (when it was queued to run).
    ``{}`` when there is no DAG run (or neither date).
    """
    when = getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
    if not isinstance(when, datetime.datetime):
        return {}
    return {"logical_date": when.isoformat(), "ds": when.strftime("%Y-%m-%d"), "ds_nodash": when.strftime("%Y%m%d")}


def info_namespace(recipe_name: str, path: tuple) -> dict:
    label = path[-1] if path else recipe_name
    fqname = ".".join((recipe_name,) + tuple(path))
    parts = label.split("-")
    return {"fqname": fqname, "taskname": fqname, "label": label, "label_parts": parts,
            "suffix": parts[-1] if len(parts) > 1 else ""}


def resolve_params(cargo: Any, raw: dict, ns: dict, *, where: str, tolerant: bool = False) -> dict:
    """Fill defaults and evaluate every value of ``raw`` for ``cargo`` (cab or recipe).

    Values are evaluated repeatedly so that ``current.x`` may refer to parameters
    resolved in the same pass. Implicit values are evaluated last.

    :param tolerant: keep unresolvable values out instead of raising (used when skipping).
    :raises FormulaError: naming the parameter (``where.param: ...``).
    """
    schema = {**cargo.inputs, **cargo.outputs}
    defaults = dict(getattr(cargo, "defaults", None) or {})
    pending: dict = {}
    for name, p in schema.items():
        if p.implicit is not UNSET and p.implicit is not None:
            continue
        if name in defaults:
            pending[name] = defaults[name]
        elif p.default is not UNSET and p.default != "UNSET":
            pending[name] = p.default
    if getattr(cargo, "steps", None):  # a recipe's defaults may also set sub-step params
        pending.update({k: v for k, v in defaults.items() if k not in schema and "." in k})
    pending.update(raw)
    values: dict = {}
    errors: dict = {}
    while pending:
        current = {**{k: v for k, v in pending.items() if not _deferred(v)}, **values}
        progressed, errors = False, {}
        for name, value in list(pending.items()):
            try:
                values[name] = value if is_data(value) else _evaluate(value, {**ns, "current": current})
            except FormulaError as exc:
                errors[name] = exc
                continue
            del pending[name]
            progressed = True
        if not progressed:
            break
    for name, p in schema.items():
        if p.implicit is not UNSET and p.implicit is not None and name not in values:
            try:
                values[name] = _evaluate(p.implicit, {**ns, "current": dict(values)})
            except FormulaError as exc:
                errors[name] = exc
    if errors and not tolerant:
        raise FormulaError("; ".join(f"{where}.{k}: {v}" for k, v in errors.items()))
    return {k: v for k, v in values.items() if v is not UNSET}


#: the published params of an earlier step, loaded on first use (see :class:`~..recipe.resolve.LazyNS`)
from airflow_provider_stepcab.recipe.resolve import LazyNS as LazyParams  # noqa: E402


def trigger_values(recipe: Any, given: dict) -> dict:
    """Recipe params given at trigger time as data (:class:`~..recipe.resolve.Literal`): never
    substituted or evaluated. A value equal to the recipe's own default (what the trigger form
    shows) is the recipe's, so it is left out and the default applies as written."""
    from airflow_provider_stepcab.recipe.resolve import Literal

    out = {}
    for name, value in given.items():
        schema = recipe.inputs.get(name) or recipe.outputs.get(name)
        if schema is not None and schema.default is not UNSET and plain(schema.default) == value:
            continue
        if schema is not None and name in (recipe.defaults or {}) and plain(recipe.defaults[name]) == value:
            continue
        out[name] = value if isinstance(value, Literal) else Literal(as_data(value))
    return out


class StepFetcher:
    """``fetch(path, loop)`` for the recipe resolver: the published params of an earlier step task,
    loaded lazily (:class:`LazyParams`) so that only the steps a formula names cost a request."""

    def __init__(self, fetch: Callable):
        self._fetch = fetch

    def __call__(self, path: tuple, index: Optional[int]) -> Any:
        if index is None:
            return LazyParams(lambda: self._fetch(path, same_loop=False, in_loop=False))
        return LazyParams(lambda: self._fetch(path, same_loop=True, in_loop=True, map_index=index))


def resolve(*, recipe: Any, loaded: Any, step_path: tuple, recipe_params: dict, overrides: Any,
            loop_value: Any, loop_index: Optional[int], fetch: Callable, backend_pref: Any,
            available: list, workdir: Any, recipe_name: str,
            run_values: Optional[dict] = None) -> ResolvedStep:
    """Resolve the cab step at ``step_path`` for a running DAG run.

    The recipe is walked by the one resolver (:func:`~..recipe.resolve.resolve_recipe`, Stimela's
    evaluation model) up to this step, earlier steps' values coming from their tasks (``fetch``);
    trigger-time values are data. Then selection, forced skips, input validation, the backend
    choice and ``skip_if_outputs`` are applied.

    :param fetch: ``fetch(step_path, same_loop=, in_loop=) -> dict | None`` returns the XCom params
        of another step task.
    :param run_values: extra ``config.run`` values (:func:`dag_run_values`).
    :raises RecipeError|FormulaError|ValueError: with the step and parameter named.
    """
    from airflow_provider_stepcab.recipe.resolve import Literal, Resolver, Unresolved

    config = config_namespace(getattr(loaded, "tree", None), run_values)
    skip_reason = _selection(recipe, step_path, overrides)  # known before any formula: resolve leniently
    problems = Problems()
    step_params = lambda path, cargo: {k: Literal(as_data(v)) for k, v in overrides.params_for(path, cargo).items()}  # noqa: E731
    res = Resolver(getattr(loaded, "tree", None), problems, allow_io=True, target=tuple(step_path),
                   loop_index=loop_index, step_params=step_params, config_ns=config,
                   cwd=str(workdir.path), resolve_links=True, fetch=StepFetcher(fetch), tag_skips=False)
    resolved = None
    for rs in res.recipe(recipe, trigger_values(recipe, recipe_params), fqname=recipe_name):
        resolved = rs
    fqname = ".".join((recipe_name,) + tuple(step_path))
    if resolved is None or tuple(resolved.path) != tuple(step_path):
        if problems.errors:
            raise RecipeError(problems.errors)
        raise RecipeError(f"{fqname}: not a cab step of recipe '{recipe_name}' (only cab steps become tasks)")
    step = resolved.step
    values = {k: v for k, v in resolved.params.items()}
    pending = {k: v for k, v in values.items() if isinstance(v, Unresolved)}
    forced = overrides.forced_skip(tuple(step_path))
    skip_now = resolved.skip
    if forced is not None:
        skip_now = forced
        if forced:
            skip_reason = skip_reason or "skipped by conf steps." + ".".join(step_path) + ".skip"
    elif isinstance(skip_now, Unresolved):
        if not skip_reason:
            raise FormulaError(f"{fqname}.skip: {skip_now.reason}")
    elif skip_now and skip_now is not UNSET and not skip_reason:
        skip_reason = f"skip: {step.skip!r} is true"
    if pending and not skip_reason:
        raise FormulaError("; ".join(f"{fqname}.{k}: {v.reason}" for k, v in pending.items()))
    values = {k: v for k, v in values.items() if not isinstance(v, Unresolved)}
    cab = step.cab
    if cab is not None and cab.dynamic_schema and not skip_reason:  # the schema for these values
        from airflow_provider_stepcab.recipe.dynamic_schema import apply_dynamic_schema

        cab = apply_dynamic_schema(cab, values)
    out = ResolvedStep(fqname=fqname, step_path=tuple(step_path), step=step, cab=cab, params=values,
                       ns={**resolved.command_ns, "current": values}, workdir=workdir, skip_reason=skip_reason,
                       config=loaded)
    out.chain = list(resolved.recipes)
    if skip_reason:
        return out
    validate_inputs(out)
    _choose_backend(out, out.chain, overrides.backend_for(tuple(step_path)), backend_pref, available)
    if step.skip_if_outputs:
        out.skip_reason = outputs_ready(out, fresh=step.skip_if_outputs == "fresh")
    return out


def _selection(recipe: Any, step_path: tuple, overrides: Any) -> Optional[str]:
    """Why conf ``select``/``skip_steps``/tags deselect the step (tags of its ancestors count)."""
    tags: set = set()
    level = recipe
    for label in step_path:
        step = level.steps.get(label) if level is not None else None
        if step is None:
            break
        tags |= set(step.tags or [])
        level = step.recipe
    ancestry = [tuple(step_path[:i + 1]) for i in range(len(step_path))]
    return overrides.selection_skip(ancestry, tags)


def _evaluate_tree(tree: Any, ns: dict) -> Any:
    if isinstance(tree, dict):
        return {k: _evaluate_tree(v, ns) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_evaluate_tree(v, ns) for v in tree]
    return _evaluate(tree, ns) if _deferred(tree) else tree


def _choose_backend(out: ResolvedStep, chain: list, override: dict, pref: Any, available: list) -> None:
    from airflow_provider_stepcab.recipe.backends import (
        effective_backend, parse_backend_options, select_backend, select_list)

    layer = {"select": select_list(pref)} if pref else {}
    layer.update(override or {})
    tree = getattr(out.config, "tree", None) or {}
    _, merged = effective_backend(tree, chain, out.cab, out.step, layer or None)
    merged = _evaluate_tree(plain(merged), out.ns)
    problems = Problems()
    opts = parse_backend_options(merged, UNKNOWN_LOC, "backend", problems)
    if problems.errors:
        raise RecipeError(problems.errors)
    name, excuses = select_backend(opts, out.cab, available)
    if name is None:
        why = "; ".join(f"{k}: {v}" for k, v in excuses.items()) or "nothing selected"
        raise RecipeError(f"{out.fqname}: no usable backend ({why}; available here: {', '.join(available)})")
    out.backend_name, out.backend, out.backend_tree = name, opts, merged
    env = {k: str(v) for k, v in (out.cab.management.environment or {}).items()}
    out.env = {k: str(_evaluate(v, out.ns)) for k, v in env.items()}
