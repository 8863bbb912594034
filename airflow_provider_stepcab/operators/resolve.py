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

from airflow_provider_stepcab.recipe.data import is_data
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


def _recipe_level(recipe: Any, given: dict, ns: dict, where: str) -> dict:
    """The ``recipe`` namespace of a (sub-)recipe: defaults + given params, formulas evaluated."""
    values = resolve_params(recipe, given, {**ns, "recipe": dict(given)}, where=where)
    ns2 = {**ns, "recipe": values}
    for key, value in (recipe.assign or {}).items():
        values[key] = _evaluate(value, ns2)
    for var, cases in (recipe.assign_based_on or {}).items():
        sel = values.get(var, UNSET)
        block = cases.get(str(sel), cases.get(sel, cases.get("DEFAULT"))) if isinstance(cases, dict) else None
        for key, value in (block or {}).items():
            values[key] = _evaluate(value, ns2)
    return values


def _alias_inputs(recipe: Any, label: str, step: Any, rparams: dict) -> dict:
    """Values recipe parameters pass down to step ``label`` (aliases and ``label.param`` names)."""
    out = {}
    cab_name = step.cab_name or step.recipe_name
    for alias, targets in (recipe.aliases or {}).items():
        if alias not in rparams or alias in recipe.outputs:
            continue
        for target in targets if isinstance(targets, (list, tuple)) else [targets]:
            spec, _, pname = str(target).partition(".")
            if spec == label or fnmatch.fnmatchcase(label, spec) or spec == f"({cab_name})":
                out[pname] = rparams[alias]
    prefix = label + "."
    out.update({k[len(prefix):]: v for k, v in rparams.items() if k.startswith(prefix)})
    return out


def _alias_outputs(recipe: Any, steps_ns: dict) -> dict:
    """Recipe outputs (aliases) whose target step already ran."""
    out = {}
    for alias, targets in (recipe.aliases or {}).items():
        for target in targets if isinstance(targets, (list, tuple)) else [targets]:
            label, _, pname = str(target).partition(".")
            value = (steps_ns.get(label) or {}).get(pname, UNSET) if isinstance(steps_ns.get(label), dict) else UNSET
            if value is not UNSET:
                out[alias] = value
    return out


def _skip_value(step: Any, ns: dict) -> bool:
    skip = step.skip
    if skip in (None, False, 0, "", UNSET):
        return False
    if skip is True or skip == 1:
        return True
    value = _evaluate(skip, ns)
    return bool(value) and value is not UNSET


class LazyParams(dict):
    """The resolved params of an earlier step, fetched (from XCom) the first time they are used.

    A step's formulas usually name one or two earlier steps (``previous``, ``steps.<label>``), so
    fetching every earlier sibling up front made each task cost one XCom request per earlier step.
    A ``dict`` subclass: every read goes through :meth:`_fill` first, and because ``__iter__`` is
    overridden, ``dict(x)``/``{**x}``/pickle copy through ``keys()`` and ``[]`` as well. Only C code
    reading the dict's size directly (``json.dumps``) sees an unloaded one as empty: what leaves the
    resolver goes through :func:`plain` first.
    """

    __slots__ = ("_load",)

    def __init__(self, load: Callable[[], Any]):
        super().__init__()
        self._load: Optional[Callable[[], Any]] = load

    def _fill(self) -> "LazyParams":
        load, self._load = self._load, None
        if load is not None:
            dict.update(self, load() or {})
        return self

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self._fill(), key)

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self._fill(), key)

    def __iter__(self):
        return dict.__iter__(self._fill())

    def __len__(self) -> int:
        return dict.__len__(self._fill())

    def __eq__(self, other: Any) -> bool:
        return dict.__eq__(self._fill(), other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return dict.__repr__(self._fill())

    def __reduce__(self):
        return (dict, (dict(self._fill()),))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self._fill(), key, default)

    def keys(self):
        return dict.keys(self._fill())

    def values(self):
        return dict.values(self._fill())

    def items(self):
        return dict.items(self._fill())

    def copy(self) -> dict:
        return dict(self._fill())


class _Walker:
    def __init__(self, *, fetch: Callable, recipe_name: str, loop_value: Any, loop_index: Any):
        self.fetch, self.recipe_name = fetch, recipe_name
        self.loop_value, self.loop_index = loop_value, loop_index
        self.loop_depth: Optional[int] = None   # depth of the recipe whose loop this task is mapped over

    def sibling_params(self, recipe: Any, prefix: tuple, label: str, depth: int, outer_loop: bool = False) -> Any:
        """Resolved params of an earlier sibling: XCom of a cab step; alias outputs of a sub-recipe.

        A step mapped over a loop that this task is not part of yields one value per iteration
        (a list per parameter)."""
        step = recipe.steps[label]
        path = prefix + (label,)
        same = self.loop_depth is not None and depth >= self.loop_depth
        if step.cab is not None:
            value = self.fetch(path, same_loop=same, in_loop=same or outer_loop)
            if isinstance(value, list):  # every iteration of a loop seen from outside
                keys = [k for v in value if isinstance(v, dict) for k in v]
                return {k: [v.get(k) for v in value if isinstance(v, dict)] for k in dict.fromkeys(keys)}
            return value or {}
        sub = step.recipe
        inner_loop = outer_loop or (sub.for_loop is not None and not same)
        inner = {lbl: self.sibling_params(sub, path, lbl, depth + 1, inner_loop) for lbl in sub.steps}
        return _alias_outputs(sub, inner)


def resolve(*, recipe: Any, loaded: Any, step_path: tuple, recipe_params: dict, overrides: Any,
            loop_value: Any, loop_index: Optional[int], fetch: Callable, backend_pref: Any,
            available: list, workdir: Any, recipe_name: str,
            run_values: Optional[dict] = None) -> ResolvedStep:
    """Resolve the cab step at ``step_path`` (see the module docstring).

    :param fetch: ``fetch(step_path, same_loop=, in_loop=) -> dict | None`` returns the XCom params
        of another step task.
    :param run_values: extra ``config.run`` values (:func:`dag_run_values`).
    :raises RecipeError|FormulaError|ValueError: with the step and parameter named.
    """
    config = config_namespace(getattr(loaded, "tree", None), run_values)
    walker = _Walker(fetch=fetch, recipe_name=recipe_name, loop_value=loop_value, loop_index=loop_index)
    level, given, parent, root = recipe, dict(recipe_params), {}, None
    chain: list = []
    skip_reason = _selection(recipe, step_path, overrides)  # known before any formula: resolve leniently
    for depth, label in enumerate(step_path):
        prefix = tuple(step_path[:depth])
        where = ".".join((recipe_name,) + prefix) if prefix else recipe_name
        chain.append(level)
        if level.for_loop is not None and walker.loop_depth is None:
            if loop_value is None:
                raise RecipeError(f"{where}: for_loop over '{level.for_loop.over}' but this task was "
                                  "given no loop_value (the DAG must map it over the loop)")
            walker.loop_depth = depth
            given[level.for_loop.var] = loop_value
            given[f"{level.for_loop.var}@index"] = loop_index if loop_index is not None else 0
        base_ns = {"config": config, "parent": parent, "info": info_namespace(recipe_name, prefix)}
        base_ns["self"] = base_ns["info"]
        if root is not None:
            base_ns["root"] = root
        rparams = _recipe_level(level, given, {**base_ns, "root": root or dict(given)}, where)
        if level.for_loop is not None and walker.loop_depth == depth:
            rparams[level.for_loop.var] = loop_value
        root = rparams if root is None else root
        if label not in level.steps:
            raise RecipeError(f"{where}: no step '{label}' (steps: {', '.join(level.steps)})")
        labels = list(level.steps)
        steps_ns = {lbl: LazyParams(lambda lbl=lbl, level=level, prefix=prefix, depth=depth:
                                    walker.sibling_params(level, prefix, lbl, depth))
                    for lbl in labels[:labels.index(label)]}
        for key, value in _alias_outputs(level, steps_ns).items():
            rparams.setdefault(key, value)
        step = level.steps[label]
        path = prefix + (label,)
        raw = _alias_inputs(level, label, step, rparams)
        raw.update(step.params)
        raw.update(overrides.params_for(path, step.cargo))
        info = info_namespace(recipe_name, path)
        ns = {**base_ns, "recipe": rparams, "root": root, "steps": steps_ns,
              "previous": steps_ns[labels[labels.index(label) - 1]] if steps_ns else {},
              "info": info, "self": info}
        forced = overrides.forced_skip(path)
        try:
            values = resolve_params(step.cargo, raw, ns, where=".".join((recipe_name,) + path),
                                    tolerant=bool(skip_reason) or forced is True)
            skip_now = _skip_value(step, {**ns, "current": values})
        except FormulaError:
            if skip_reason or forced is True:
                values, skip_now = {}, True
            else:
                raise
        if forced is not None:
            skip_now = forced
            if forced:
                skip_reason = skip_reason or "skipped by conf steps." + ".".join(path) + ".skip"
        elif skip_now and not skip_reason:
            skip_reason = f"skip: {step.skip!r} is true"
        if step.cab is not None:
            break
        parent, given, level = rparams, values, step.recipe

    cab = step.cab
    fqname = ".".join((recipe_name,) + tuple(step_path))
    if step.recipe is not None or cab is None:
        raise RecipeError(f"{fqname}: not a cab step (only cab steps become tasks)")
    out = ResolvedStep(fqname=fqname, step_path=tuple(step_path), step=step, cab=cab, params=values,
                       ns={**ns, "current": values}, workdir=workdir, skip_reason=skip_reason, config=loaded)
    if skip_reason:
        return out
    validate_inputs(out)
    _choose_backend(out, chain, overrides.backend_for(tuple(step_path)), backend_pref, available)
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
