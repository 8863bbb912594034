"""Per-step checks around a run: inputs before, outputs after (Stimela's validate_inputs/outputs).

Every function works on a :class:`~.resolve.ResolvedStep` inside its working directory
(the caller ``chdir``s there), so relative paths mean what they mean to the step. No Airflow import.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional

from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import UNSET


def evaluate(value: Any, ns: dict) -> Any:
    """Evaluate a value as written in a recipe (formula, ``{}``, literal); cwd = the current directory."""
    from airflow_provider_stepcab.recipe.values import evaluate_value

    return evaluate_value(value, ns, cwd=os.getcwd())


def _dtype(p: Any) -> Any:
    return getattr(p, "dtype", None)


def is_file(p: Any) -> bool:
    d = _dtype(p)
    return bool(d is not None and (d.is_file or d.is_file_list))


def _paths(p: Any, value: Any) -> list:
    if value in (None, "", UNSET):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)]


def validate_inputs(out: Any) -> None:
    """Check dtypes/choices/required of every parameter and that input files exist (cwd = workdir)."""
    from airflow_provider_stepcab.recipe.validate import check_value, missing_required

    cab, problems = out.cab, Problems()
    for name, value in list(out.params.items()):
        p = cab.inputs.get(name) or cab.outputs.get(name)
        if p is None:
            problems.error(out.step.loc, f"{out.fqname}.{name}", f"unknown parameter '{name}' of cab '{cab.name}'")
            continue
        out.params[name] = check_value(p, value, key_path=f"{out.fqname}.{name}", loc=p.loc, problems=problems)
        if is_file(p) and not p.is_output and p.must_exist is not False:
            missing = [f for f in _paths(p, out.params[name]) if "://" not in f and not os.path.exists(f)]
            if missing:
                problems.error(p.loc, f"{out.fqname}.{name}", f"{', '.join(missing)} doesn't exist "
                               f"(relative to {out.workdir.path})")
    for name in missing_required(cab.inputs, out.params):
        problems.error(out.step.loc, f"{out.fqname}.{name}", f"missing required parameter '{name}'")
    problems.raise_if_errors()


def prepare_outputs(out: Any) -> None:
    """``mkdir`` / ``mkdir_parent`` / ``remove_if_exists`` for output (and mkdir inputs) paths."""
    for name, p in {**out.cab.inputs, **out.cab.outputs}.items():
        if not is_file(p) or name not in out.params:
            continue
        for path in _paths(p, out.params[name]):
            if "://" in path:
                continue
            is_dir = _dtype(p).kind in ("Directory", "MS") or "Directory" in str(_dtype(p))
            if p.is_output and p.path_policies.remove_if_exists and os.path.lexists(path):
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
            if p.mkdir and is_dir:
                os.makedirs(path, exist_ok=True)
            elif p.is_output and p.path_policies.mkdir_parent is not False and os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)


def finalize_outputs(out: Any) -> None:
    """After a successful run: implicit outputs, dtypes, required outputs, ``must_exist``."""
    from airflow_provider_stepcab.recipe.resolve import NS
    from airflow_provider_stepcab.recipe.validate import check_value

    problems = Problems()
    for name, p in out.cab.outputs.items():
        if p.implicit is not UNSET and p.implicit is not None:  # NS: ``current.Output.Name`` reaches "Output.Name"
            value = evaluate(p.implicit, {**out.ns, "current": NS(out.params)})
            if value is not UNSET:
                out.params[name] = value
        value = out.params.get(name, UNSET)
        key = f"{out.fqname}.{name}"
        if value is UNSET:
            if p.required:
                problems.error(p.loc, key, f"required output '{name}' was not produced")
            continue
        out.params[name] = check_value(p, value, key_path=key, loc=p.loc, problems=problems)
        if is_file(p) and p.must_exist:
            missing = [f for f in _paths(p, out.params[name]) if "://" not in f and not os.path.exists(f)]
            if missing or not _paths(p, value):
                problems.error(p.loc, key, f"output {', '.join(missing) or name} doesn't exist after the run")
    problems.raise_if_errors()


def outputs_ready(out: Any, *, fresh: bool) -> Optional[str]:
    """``skip_if_outputs``: a reason to skip when every file output exists (and is fresh), else None."""
    newest = 0.0
    if fresh:
        for name, p in out.cab.inputs.items():
            if is_file(p) and not p.skip_freshness_checks:
                for f in _paths(p, out.params.get(name)):
                    if os.path.exists(f):
                        newest = max(newest, os.path.getmtime(f))
    checked = 0
    for name, p in out.cab.outputs.items():
        if not is_file(p) or name not in out.params:
            continue
        for f in _paths(p, out.params[name]):
            if not os.path.exists(f):
                if p.must_exist is not False:
                    return None
                continue
            if fresh and not p.skip_freshness_checks and os.path.getmtime(f) < newest:
                return None
            checked += 1
    return f"skip_if_outputs: {'fresh' if fresh else 'exist'} and all outputs are there" if checked else None


def file_outputs(out: Any) -> list:
    """Absolute paths of existing File/Directory/MS outputs (for Assets)."""
    found = []
    for name, p in out.cab.outputs.items():
        if is_file(p):
            for f in _paths(p, out.params.get(name)):
                if "://" not in f:
                    full = out.workdir.resolve(f)
                    if os.path.exists(full):
                        found.append(os.path.normpath(full))
    return found
