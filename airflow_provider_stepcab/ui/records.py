"""The ``stepcab_step`` XCom: what a step task ran, the record the Step view shows.

A running step task pushes one dict under :data:`STEP_KEY` (:func:`step_record` checks and
normalises it)::

    {"fqname", "cab", "backend", "image" | None, "workdir",
     "argv": [...],               # the cab's command line
     "command": [...] | None,     # the full command executed (container command; None: native)
     "script": str | None,        # the sbatch script (Slurm)
     "pod": dict | None,          # the pod spec (Kubernetes)
     "pod_name", "pod_phase": str | None,  # the pod that ran and its last phase
     "params": {name: value},     # every resolved parameter
     "sources": {name: source},   # one of SOURCES per parameter (the resolver's, recipe/sources.py)
     "outputs": [path, ...],      # file outputs
     "skip_reason": str | None,
     "cache": str | None,         # the step cache's decision ("cached: ...", "runs: ..."), docs/cache.md
     "doc": str | None}           # the cab's schema table, as ``stepcab doc`` prints it

Slurm steps also push :data:`SLURM_KEY` (the submitted job: ``job_id``, ``job_name``,
``job_dir`` ...) and, once the job ended, sacct's accounting as :data:`RESOURCES_KEY` (``state``,
``nodelist``, ``queue_wait_s``, ``elapsed_s`` ...: :mod:`..runtime.accounting`); the Step view
shows them as they are.

No Airflow import here: the record is plain data, built where the step runs.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

from airflow_provider_stepcab.recipe.sources import SOURCES  # noqa: F401 - where a value came from

#: XCom key of the step record
STEP_KEY = "stepcab_step"
#: XCom key of a Slurm step's job facts (operators/slurm.py ``XCOM_JOB_KEY``)
SLURM_KEY = "slurm_job"
#: XCom key of a step's resource accounting
RESOURCES_KEY = "stepcab_resources"


_REQUIRED = ("fqname", "cab", "backend", "workdir", "argv")
_OPTIONAL = {"image": None, "command": None, "script": None, "pod": None, "pod_name": None, "pod_phase": None,
             "params": {}, "sources": {}, "outputs": [], "skip_reason": None, "cache": None,
             "doc": None}


class StepRecordError(ValueError):
    """A step record that does not have the documented shape (the message names the field)."""


def _str_list(name: str, value: Any, *, optional: bool) -> Optional[list]:
    if value is None and optional:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise StepRecordError(f"step record: {name} must be a list of strings, not {type(value).__name__}")
    return [str(v) for v in value]


def _opt_str(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise StepRecordError(f"step record: {name} must be a string or null, not {type(value).__name__}")
    return os.fspath(value)


def _json_safe(value: Any) -> Any:
    """``value`` as JSON data (tuples → lists, unknown objects → their ``str``)."""
    return json.loads(json.dumps(value, default=str))


def step_record(**fields: Any) -> dict:
    """The ``stepcab_step`` XCom value from ``fields`` (see the module docstring), normalised.

    :raises StepRecordError: a required field is missing, a field is unknown or has the wrong type,
        or a source is not one of :data:`SOURCES`.
    """
    unknown = sorted(set(fields) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise StepRecordError(f"step record: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if fields.get(k) is None]
    if missing:
        raise StepRecordError(f"step record: missing field(s) {', '.join(missing)}")
    out = {k: fields.get(k, default) for k, default in {**dict.fromkeys(_REQUIRED), **_OPTIONAL}.items()}
    for key in ("fqname", "cab", "backend"):
        if not isinstance(out[key], str) or not out[key]:
            raise StepRecordError(f"step record: {key} must be a non-empty string")
    out["workdir"] = _opt_str("workdir", out["workdir"])
    out["argv"] = _str_list("argv", out["argv"], optional=False)
    out["command"] = _str_list("command", out["command"], optional=True)
    out["outputs"] = _str_list("outputs", out["outputs"] or [], optional=False)
    for key in ("image", "script", "skip_reason", "cache", "doc", "pod_name", "pod_phase"):
        out[key] = _opt_str(key, out[key])
    if out["pod"] is not None and not isinstance(out["pod"], Mapping):
        raise StepRecordError("step record: pod must be a mapping or null")
    for key in ("params", "sources"):
        if not isinstance(out[key] or {}, Mapping):
            raise StepRecordError(f"step record: {key} must be a mapping")
    params = {str(k): v for k, v in (out["params"] or {}).items()}
    sources = {str(k): v for k, v in (out["sources"] or {}).items()}
    bad = {k: v for k, v in sources.items() if v not in SOURCES}
    if bad:
        name, value = next(iter(bad.items()))
        raise StepRecordError(f"step record: sources.{name}: {value!r} is not one of {', '.join(SOURCES)}")
    out["params"], out["sources"] = _json_safe(params), sources
    out["pod"] = _json_safe(out["pod"]) if out["pod"] is not None else None
    return out


def cab_doc(cab: Any) -> str:
    """The cab's schema table exactly as ``stepcab doc <cab>`` prints it."""
    from airflow_provider_stepcab.schema_table import format_schema

    return format_schema(f"cab '{cab.name}' (command: {cab.command})", cab.info,
                         [("inputs", cab.inputs), ("outputs", cab.outputs)])


def image_name(cab: Any) -> Optional[str]:
    """``registry/name:version`` of the cab's image, or ``None`` for a cab without one."""
    image = getattr(cab, "image", None)
    if image is None or not getattr(image, "name", None):
        return getattr(image, "path", None) if image is not None else None
    name = f"{image.registry.rstrip('/')}/{image.name}" if image.registry else image.name
    return f"{name}:{image.version}" if image.version else name
