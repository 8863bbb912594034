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
    sources: dict = field(default_factory=dict)   # param -> where its value came from (recipe/sources.py)
    executed: Optional[dict] = None       # what the mechanism ran (ui/capture.py note_executed)
    cache_decision: Optional[str] = None  # the step cache's decision (operators/step_cache.note)


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


def plain_params(params: Any) -> dict:
    """The task context's ``params`` as a plain dict."""
    if not params:
        return {}
    try:
        return {k: params[k] for k in params}
    except Exception:  # pragma: no cover - defensive: some params fail to resolve
        return dict(params)


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


#: the published params of an earlier step, loaded on first use (see :class:`~..recipe.resolve.LazyNS`)
from airflow_provider_stepcab.recipe.resolve import LazyNS as LazyParams  # noqa: E402


def trigger_values(recipe: Any, given: dict) -> dict:
    """Recipe params given at trigger time as data (:func:`~..recipe.data.as_data`): never
    substituted or evaluated. A value equal to the recipe's own default (what the trigger form
    shows) is the recipe's, so it is left out and the default applies as written."""
    out = {}
    for name, value in given.items():
        schema = recipe.inputs.get(name) or recipe.outputs.get(name)
        if schema is not None and schema.default is not UNSET and plain(schema.default) == value:
            continue
        if schema is not None and name in (recipe.defaults or {}) and plain(recipe.defaults[name]) == value:
            continue
        out[name] = as_data(value)
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
            run_values: Optional[dict] = None, loop_indices: Optional[dict] = None) -> ResolvedStep:
    """Resolve the cab step at ``step_path`` for a running DAG run.

    The recipe is walked by the one resolver (:func:`~..recipe.resolve.resolve_recipe`, Stimela's
    evaluation model) up to this step, earlier steps' values coming from their tasks (``fetch``);
    trigger-time values are data. Then selection, forced skips, input validation, the backend
    choice and ``skip_if_outputs`` are applied.

    :param fetch: ``fetch(step_path, same_loop=, in_loop=) -> dict | None`` returns the XCom params
        of another step task.
    :param run_values: extra ``config.run`` values (:func:`dag_run_values`).
    :param loop_indices: iterations of the unrolled loops around the step (by recipe path).
    :raises RecipeError|FormulaError|ValueError: with the step and parameter named.
    """
    from airflow_provider_stepcab.recipe.resolve import Resolver, Unresolved

    config = config_namespace(getattr(loaded, "tree", None), run_values)
    skip_reason = _selection(recipe, step_path, overrides)  # known before any formula: resolve leniently
    problems = Problems()
    step_params = lambda path, cargo: {k: as_data(v) for k, v in overrides.params_for(path, cargo).items()}  # noqa: E731
    res = Resolver(getattr(loaded, "tree", None), problems, allow_io=True, target=tuple(step_path),
                   loop_index=loop_index, step_params=step_params, config_ns=config,
                   cwd=str(workdir.path), resolve_links=True, fetch=StepFetcher(fetch), tag_skips=False,
                   loop_indices=loop_indices)
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
    # (a dynamic_schema cab: ``step.cab`` is already the schema for these values, recipe/resolve.py)
    out = ResolvedStep(fqname=fqname, step_path=tuple(step_path), step=step, cab=cab, params=values,
                       ns={**resolved.command_ns, "current": values}, workdir=workdir, skip_reason=skip_reason,
                       config=loaded, sources={k: resolved.sources.get(k, "step") for k in values})
    out.chain = list(resolved.recipes)
    if skip_reason:
        return out
    validate_inputs(out)
    _choose_backend(out, out.chain, overrides.backend_for(tuple(step_path)), backend_pref, available)
    if _checks_outputs(step.skip_if_outputs, forced, getattr(loaded, "tree", None)):
        out.skip_reason = outputs_ready(out, fresh=step.skip_if_outputs == "fresh")
    return out


def _checks_outputs(mode: Optional[str], forced: Optional[bool], tree: Any) -> bool:
    """Whether ``skip_if_outputs: mode`` is checked, as Stimela 2.1.4 does: not for a step forced
    to run (``conf.steps.<step>.skip: false``, Stimela's unskip: ``-e``, ``-s STEP``), nor when
    ``opts.disable_skips.<mode>`` is set (``stimela run -f`` sets ``fresh``, ``-F`` ``exist``)."""
    if not mode or forced is False:
        return False
    disabled = ((tree or {}).get("opts") or {}).get("disable_skips") or {}
    return not (isinstance(disabled, dict) and disabled.get(mode) is True)


def _selection(recipe: Any, step_path: tuple, overrides: Any) -> Optional[str]:
    """Why the run's step selection (conf ``select``/``skip_steps``/tags) deselects the step."""
    return overrides.selection_skip(tuple(step_path))


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
