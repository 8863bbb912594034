"""Trigger-time overrides from a DAG run's ``conf`` (and the DAG params).

The conf shape, everything optional::

    {
      "<recipe input>": value,                  # also settable through the trigger form (DAG params)
      "stepcab_workdir": "/path",               # see runtime/workdir.py
      "steps": {
        "<step path>": {                        # "cal.flag" (labels from the top recipe), a glob, or "*"
          "params": {"<param>": value},         # replaces the value written in the recipe
          "backend": {"select": "native", ...}, # merged over the step's backend settings
          "skip": true                          # force-skip (false: force-run a skip: true step)
        }
      },
      "select": ["cal", "image.*"],             # run only these steps (and their sub-steps)
      "skip_steps": ["cal.flag"],               # skip these
      "tags": ["quick"], "skip_tags": ["slow"]  # like stimela -t / --skip-tags
    }

More specific keys win: ``"*"`` < globs < the exact path. A key that matches no step,
a parameter unknown to the step, or an unknown top-level key fails the task with a
message naming it (``conf.steps.cal.params.bogus: ...``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from airflow_provider_stepcab.recipe.errors import RecipeError
from airflow_provider_stepcab.runtime.workdir import WORKDIR_PARAM

STEP_KEYS = ("params", "backend", "skip")
LIST_KEYS = ("select", "skip_steps", "tags", "skip_tags")
TOP_KEYS = ("steps", WORKDIR_PARAM) + LIST_KEYS


def walk_steps(recipe: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, step)`` for every step of ``recipe``, sub-recipe steps included, in order."""
    for label, step in recipe.steps.items():
        path = prefix + (label,)
        yield path, step
        if step.recipe is not None:
            yield from walk_steps(step.recipe, path)


def _names(cargo: Any) -> set:
    names = set(cargo.inputs) | set(cargo.outputs)
    return names


def _accepts(cargo: Any, name: str) -> bool:
    """``cargo`` (cab or recipe) has parameter ``name``; recipes also take ``sub.param``."""
    if name in _names(cargo):
        return True
    if getattr(cargo, "steps", None) and "." in name:
        head, rest = name.split(".", 1)
        step = cargo.steps.get(head)
        return step is not None and _accepts(step.cargo, rest)
    return False


@dataclass
class StepOverrides:
    """Validated trigger-time overrides (see the module docstring)."""

    recipe_params: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # key -> {"params": {}, "backend": {}, "skip": bool}
    select: list = field(default_factory=list)
    skip_steps: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    skip_tags: list = field(default_factory=list)

    def _matching(self, path: tuple) -> list:
        dotted = ".".join(path)
        ranked = []
        for key, value in self.steps.items():
            if key == dotted:
                ranked.append((2, value))
            elif key == "*" or fnmatch.fnmatchcase(dotted, key):
                ranked.append((0 if key == "*" else 1, value))
        return [v for _, v in sorted(ranked, key=lambda x: x[0])]

    def params_for(self, path: tuple, cargo: Any) -> dict:
        """Override values for the step at ``path`` (only names ``cargo`` accepts)."""
        out: dict = {}
        for entry in self._matching(path):
            out.update({k: v for k, v in (entry.get("params") or {}).items() if _accepts(cargo, k)})
        return out

    def backend_for(self, path: tuple) -> dict:
        """The backend override mapping for ``path`` (later/more specific keys merged on top)."""
        from airflow_provider_stepcab.recipe.backends import merge_backend_layers

        layers = [e.get("backend") for e in self._matching(path)]
        layers = [{"select": b} if isinstance(b, (str, list)) else b for b in layers if b]
        return dict(merge_backend_layers(*layers)) if layers else {}

    def forced_skip(self, path: tuple) -> Optional[bool]:
        """``True``/``False`` when conf forces (not) skipping the step at ``path``."""
        result = None
        for entry in self._matching(path):
            if "skip" in entry:
                result = bool(entry["skip"])
        return result

    def selection_skip(self, paths: list, tags: set) -> Optional[str]:
        """Why the step (``paths``: its path and its ancestors') is deselected, or ``None``."""
        dotted = [".".join(p) for p in paths]
        hit = lambda pats: any(fnmatch.fnmatchcase(d, p) for d in dotted for p in pats)  # noqa: E731
        if self.skip_steps and hit(self.skip_steps):
            return "deselected by conf skip_steps"
        if self.skip_tags and tags & set(self.skip_tags):
            return f"tag(s) {sorted(tags & set(self.skip_tags))} skipped by conf skip_tags"
        chosen = (self.select and hit(self.select)) or (self.tags and tags & set(self.tags))
        if (self.select or self.tags) and not chosen and "always" not in tags:
            return "not selected by conf select/tags"
        if "never" in tags and not chosen:
            return "tagged 'never' and not explicitly selected"
        return None


def parse_overrides(conf: dict, recipe: Any, params: Optional[dict] = None) -> StepOverrides:
    """Validate ``conf`` (and DAG ``params``) against ``recipe``.

    :raises RecipeError: naming every bad key, e.g. ``conf.steps.nope: no step of recipe ... matches``.
    """
    errors: list = []
    out = StepOverrides()
    conf, params = dict(conf or {}), dict(params or {})
    control = {k for k in TOP_KEYS if not _accepts(recipe, k)}  # a recipe input keeps its name
    for source in (params, conf):  # conf (hand-written or from the form) wins over DAG params
        for name, value in source.items():
            if name in control or value is None:
                continue
            if _accepts(recipe, name):
                out.recipe_params[name] = value
            elif source is conf:
                known = ", ".join(sorted(_names(recipe))) or "none"
                errors.append(f"conf.{name}: not a parameter of recipe '{recipe.name}' "
                              f"(recipe parameters: {known}; other keys: {', '.join(sorted(control))})")
    settings = {k: v for k, v in {**params, **conf}.items() if k in control and v is not None}
    for key in LIST_KEYS:
        value = settings.get(key)
        if key not in control or value is None:
            continue
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, list):
            errors.append(f"conf.{key}: expected a list of step paths/tags, got {value!r}")
            continue
        setattr(out, key, [str(v) for v in value])
    all_steps = list(walk_steps(recipe))
    steps = (settings.get("steps") or {}) if "steps" in control else {}
    if not isinstance(steps, dict):
        errors.append(f"conf.steps: expected a mapping of step path -> overrides, got {steps!r}")
        steps = {}
    for key, entry in steps.items():
        where = f"conf.steps.{key}"
        matched = [(p, s) for p, s in all_steps
                   if key == "*" or ".".join(p) == key or fnmatch.fnmatchcase(".".join(p), key)]
        if not matched:
            known = ", ".join(".".join(p) for p, _ in all_steps)
            errors.append(f"{where}: no step of recipe '{recipe.name}' matches (steps: {known})")
            continue
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping with keys {', '.join(STEP_KEYS)}")
            continue
        for sub in entry:
            if sub not in STEP_KEYS:
                errors.append(f"{where}.{sub}: unknown override (use one of {', '.join(STEP_KEYS)})")
        for pname in entry.get("params") or {}:
            if not any(_accepts(s.cargo, pname) for _, s in matched):
                names = sorted(set().union(*(_names(s.cargo) for _, s in matched)))
                errors.append(f"{where}.params.{pname}: no such parameter "
                              f"(parameters: {', '.join(names) or 'none'})")
        backend = entry.get("backend")
        if backend is not None and not isinstance(backend, (dict, str, list)):
            errors.append(f"{where}.backend: expected a mapping like {{select: native}}")
        out.steps[key] = entry
    if errors:
        raise RecipeError(errors)
    return out
