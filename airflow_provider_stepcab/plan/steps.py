"""Planning a recipe: every cab step flattened in run order with its argv and backend settings.

``plan_recipe`` is what ``stepcab plan`` prints. Values that can only be known at run time
(outputs of earlier steps, ``GLOB``/``EXISTS`` ...) appear in the argv as the formula text as
written and are listed under ``unresolved``. Pure: no I/O, no Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..recipe.backends import effective_backend, select_backend
from ..recipe.errors import Loc, Problems, RecipeError
from ..recipe.model import UNSET, Recipe
from ..recipe.resolve import CLI_LOC, ResolvedStep, Unresolved, evaluate, resolve_recipe
from ..recipe.yamlio import to_plain
from .step_plan import STIMELA, cab_argv


@dataclass
class StepPlan:
    """One cab step of a plan."""

    name: str                     # fqname incl. loop indices: outer.inner.step / outer.loop.0.step
    path: tuple                   # step labels from the top recipe
    cab: str
    backend: Optional[str]
    argv: Optional[list]
    settings: dict
    wrapper: Optional[str] = None
    params: dict = field(default_factory=dict)
    unresolved: dict = field(default_factory=dict)   # param (or "command") -> reason
    skip: Any = False
    tags: list = field(default_factory=list)
    loop: Optional[dict] = None
    error: Optional[str] = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "cab": self.cab, "backend": self.backend, "argv": self.argv,
             "settings": _jsonable(self.settings)}
        if self.wrapper:
            d["wrapper"] = self.wrapper
        d["path"] = list(self.path)
        d["params"] = _jsonable(self.params)
        if self.unresolved:
            d["unresolved"] = dict(self.unresolved)
        d["skip"] = _jsonable(self.skip)
        if self.tags:
            d["tags"] = list(self.tags)
        if self.loop:
            d["loop"] = _jsonable(self.loop)
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class RecipePlan:
    recipe: str
    steps: list = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "steps": [s.to_dict() for s in self.steps],
                "problems": [str(p) for p in self.problems]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Unresolved):
        return str(value.text)
    if value is UNSET:
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _display(value: Any) -> Any:
    """Unresolved values shown as their text, so the argv can still be built."""
    if isinstance(value, Unresolved):
        return str(value.text)
    if isinstance(value, list):
        return [_display(v) for v in value]
    return value


def _coerce(rs: ResolvedStep, problems: Problems, key_path: str) -> dict:
    out = {}
    schema = rs.step.cab.schema
    for name, value in rs.params.items():
        p = schema.get(name)
        if p is None or isinstance(value, Unresolved) or value is None or p.dtype is None:
            out[name] = value
            continue
        try:
            out[name] = p.dtype.validate(value) if not _has_unresolved(value) else value
        except (ValueError, TypeError) as exc:
            loc = rs.step.param_locs.get(name) or rs.step.loc
            problems.error(loc, f"{key_path}.params.{name}",
                           f"invalid value {value!r} for dtype {p.dtype_str}: {exc}", "wrong-dtype")
            out[name] = value
    return out


def _has_unresolved(value: Any) -> bool:
    if isinstance(value, Unresolved):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_unresolved(v) for v in value)
    return False


def _argv(rs: ResolvedStep, params: dict, unresolved: dict) -> list:
    cab = rs.step.cab

    def subst(text: str) -> str:
        if not isinstance(text, str) or "{" not in text:
            return text
        value = evaluate(text, rs.command_ns)
        if isinstance(value, Unresolved):
            unresolved["command"] = value.reason
            return text
        return str(value)

    shown = {k: _display(v) for k, v in params.items()}
    return cab_argv(cab, shown, subst, target=STIMELA)


def _settings_formulas(merged: Any, ns: dict, unresolved: dict) -> Any:
    """Evaluate formulas in the merged backend subtree (Stimela does this per step)."""
    if isinstance(merged, Mapping):
        return {k: _settings_formulas(v, ns, unresolved) for k, v in merged.items()}
    if isinstance(merged, list):
        return [_settings_formulas(v, ns, unresolved) for v in merged]
    value = evaluate(merged, ns)
    if isinstance(value, Unresolved):
        unresolved.setdefault("backend", value.reason)
        return merged
    return value


def plan_step(rs: ResolvedStep, config_tree: Any, problems: Problems, *, backend: Any = None,
              strict: bool = False) -> StepPlan:
    """Plan one resolved cab step: backend selection, merged settings and argv."""
    step, cab = rs.step, rs.step.cab
    key_path = ".".join([rs.recipes[0].name] + [f"steps.{p}" for p in rs.path]) if rs.recipes else rs.fqname
    unresolved = {k: v.reason for k, v in rs.params.items() if isinstance(v, Unresolved)}
    _, merged = effective_backend(config_tree, rs.recipes, cab, step, backend)
    merged = _settings_formulas(to_plain(merged), rs.command_ns, unresolved)
    from ..recipe.backends import parse_backend_options
    opts = parse_backend_options(merged, Loc(step.loc.file, step.loc.line), f"{key_path}.backend", None, strict)
    name, excuses = select_backend(opts, cab)
    error = None
    if name is None:
        why = "; ".join(f"{k}: {v}" for k, v in excuses.items()) or "nothing selected"
        error = f"unable to select a backend ({why})"
        problems.error(step.loc, f"{key_path}.backend", error, "no-backend")
    if opts.wrapper == "slurm" and name == "kube":
        error = "can't combine slurm with the kube backend"
        problems.error(step.loc, f"{key_path}.backend", error, "no-backend")
    params = _coerce(rs, problems, key_path)
    argv = None
    try:
        argv = _argv(rs, params, unresolved)
    except RecipeError as exc:
        error = "; ".join(p.message for p in exc.problems)
        for p in exc.problems:
            problems.error(step.loc, key_path, p.message, p.code or "command-line")
    except Exception as exc:  # noqa: BLE001 - one bad step must not hide the rest of the plan
        error = f"{type(exc).__name__}: {exc}"
        problems.error(step.loc, key_path, f"cannot build the command line: {error}", "command-line")
    settings = opts.to_dict()
    return StepPlan(name=rs.fqname, path=rs.path, cab=step.cab_name or cab.name, backend=name, argv=argv,
                    settings=settings, wrapper=opts.wrapper, params=params, unresolved=unresolved,
                    skip=rs.skip, tags=list(step.tags), loop=rs.loop, error=error)


def plan_recipe(recipe: Recipe, config: Any, params: Optional[Mapping[str, Any]] = None, *,
                backend: Any = None, strict: bool = False,
                param_locs: Optional[Mapping[str, Loc]] = None, cwd: Optional[str] = None) -> RecipePlan:
    """Plan every cab step of ``recipe``.

    :param config: the :class:`~..recipe.config.LoadedConfig` (or its tree).
    :param params: recipe inputs and/or ``label.param`` values (already typed, e.g. read as YAML).
    :param backend: override: a backend name, comma list, or a backend mapping merged last.
    :param cwd: the directory the steps will run in: path parameters are written relative to it,
        as Stimela passes them (``None``: as written).
    :returns: a :class:`RecipePlan`; its ``problems`` hold errors found while planning.
    """
    tree = getattr(config, "tree", config)
    problems = Problems()
    plan = RecipePlan(recipe=recipe.name, problems=problems)
    locs = dict(param_locs or {}) or {k: CLI_LOC for k in (params or {})}
    for rs in resolve_recipe(recipe, tree, params, problems=problems, param_locs=locs, cwd=cwd):
        plan.steps.append(plan_step(rs, tree, problems, backend=backend, strict=strict))
    return plan


__all__ = ["StepPlan", "RecipePlan", "plan_recipe", "plan_step"]
