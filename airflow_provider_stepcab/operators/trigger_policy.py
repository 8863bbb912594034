"""What a DAG run's ``conf`` (and the trigger form) may change: the trigger-time override policy.

Airflow separates DAG authors (they write files: trusted with the workers) from users who may
only trigger runs. A trigger-time override therefore changes *what* a recipe computes and *how
much* it may use, never *how* it runs on a machine (see ``docs/security.md`` for the table):

- recipe inputs and step params (checked against their dtype and choices; data, never evaluated);
- ``backend.select`` among the backends the files already allow for the step;
- resource knobs (:data:`RESOURCE_KNOBS`: Slurm time/mem/cpus..., podman/docker memory/cpus, pod
  requests/limits), each only when a limit for it is set (:func:`limits_for`) and within it;
- step selection (``select``/``skip_steps``/``tags``/``skip_tags``/``enable_steps``/``steps.<s>.skip``) and the
  run's working directory (a literal absolute path).

Everything else under ``steps.<s>.backend`` (``virtual_env``, ``env``, ``remote_dependencies``,
``ssh_conn_id``, paths, container options, pod specs, ``rlimits`` ...) is for files only, unless the
deployer widens the policy in the Airflow config (``[stepcab] trigger_overrides_allow``); the
conf itself can never widen it.

No Airflow import at module level: :meth:`TriggerPolicy.from_airflow_config` imports it lazily.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from airflow_provider_stepcab.plan.quantities import kube_quantity, memory_bytes, time_limit_seconds

#: Airflow config section and keys the deployer sets (``AIRFLOW__STEPCAB__TRIGGER_OVERRIDES_ALLOW``)
CONFIG_SECTION = "stepcab"
ALLOW_KEY = "trigger_overrides_allow"
#: the run conf key choosing the step cache for a run (docs/cache.md) and its values
CACHE_PARAM = "stepcab_cache"
CACHE_MODES = ("on", "off", "refresh")
LIMITS_KEY = "trigger_limits"

_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


class PolicyViolation(ValueError):
    """A trigger-time value the policy refuses (the message names the conf key)."""


def slurm_seconds(text: Any) -> int:
    """A Slurm time limit (``minutes``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in seconds
    (:func:`~..plan.quantities.time_limit_seconds`; ``UNLIMITED`` is no limit a trigger may ask for)."""
    seconds = time_limit_seconds(text)
    if seconds is None:
        raise ValueError(f"{text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    return seconds


def slurm_bytes(text: Any) -> int:
    """A Slurm memory size (``8000`` = MiB, ``8G``) in bytes (:func:`~..plan.quantities.memory_bytes`)."""
    return memory_bytes(text, "M")


def engine_bytes(text: Any) -> int:
    """A podman/docker ``--memory`` (``512m``, ``4g``; bytes without a unit) in bytes."""
    return memory_bytes(text, "")


def kube_bytes(text: Any) -> float:
    """A Kubernetes memory quantity (``512Mi``, ``4G``) in bytes."""
    return kube_quantity(text)


def kube_cpus(text: Any) -> float:
    """A Kubernetes CPU quantity (``500m``, ``2``) in CPUs."""
    return kube_quantity(text)


def count(text: Any) -> float:
    """A plain non-negative number (CPUs, nodes, tasks, GPUs)."""
    if isinstance(text, bool) or not _NUMBER.match(str(text).strip()):
        raise ValueError(f"{text!r} is not a non-negative number")
    return float(text)


#: how a limit of each name is written (in ``trigger_limits``) and compared
LIMIT_PARSERS: dict[str, Callable[[Any], float]] = {
    "time": slurm_seconds, "mem": slurm_bytes, "cpus": count, "ntasks": count, "nodes": count, "gpus": count,
}

_SLURM_KNOBS = {"time": ("time", slurm_seconds), "mem": ("mem", slurm_bytes),
                "mem-per-cpu": ("mem", slurm_bytes), "cpus-per-task": ("cpus", count),
                "ntasks": ("ntasks", count), "nodes": ("nodes", count), "gpus": ("gpus", count)}

#: resource knobs a trigger may set (path below ``steps.<s>.backend``) -> (limit name, value parser)
RESOURCE_KNOBS: dict[str, tuple[str, Callable[[Any], float]]] = {
    **{f"slurm.{section}.{key}": knob for section in ("sbatch_opts", "srun_opts")
       for key, knob in _SLURM_KNOBS.items()},
    **{f"{engine}.{key}": knob for engine in ("podman", "docker")
       for key, knob in (("memory", ("mem", engine_bytes)), ("cpus", ("cpus", count)))},
    **{f"kube.job_pod.{what}.{kind}": knob for kind in ("request", "limit")
       for what, knob in (("memory", ("mem", kube_bytes)), ("cpu", ("cpus", kube_cpus)))},
}


def parse_limits(values: Any, where: str) -> dict[str, float]:
    """``{name: limit}`` from a mapping (``opts.airflow.trigger_limits``) or the Airflow config text
    ``time=24:00:00, mem=256G, cpus=64``.

    :raises PolicyViolation: an unknown limit name or a value of the wrong form, naming ``where``.
    """
    if isinstance(values, str):
        pairs = [item.partition("=") for item in re.split(r"[,\s]+", values) if item]
        values = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(values, dict):
        raise PolicyViolation(f"{where}: expected a mapping of limit name -> value, got {values!r}")
    out: dict[str, float] = {}
    for name, value in values.items():
        parser = LIMIT_PARSERS.get(str(name))
        if parser is None:
            raise PolicyViolation(f"{where}.{name}: unknown limit (known: {', '.join(LIMIT_PARSERS)})")
        try:
            out[str(name)] = parser(value)
        except ValueError as exc:
            raise PolicyViolation(f"{where}.{name}: {exc}") from None
    return out


@dataclass(frozen=True)
class TriggerPolicy:
    """The deployer's part of the policy (Airflow config ``[stepcab]``).

    :param allow: extra key patterns (``fnmatch``, ``*`` crosses dots) below ``steps.<s>.``, e.g.
        ``backend.native.virtual_env``: a trigger may then set them to any value.
    :param limits: caps on resource knobs (:data:`LIMIT_PARSERS`); a recipe's own
        ``opts.airflow.trigger_limits`` can only be stricter.
    """

    allow: tuple = ()
    limits: dict = field(default_factory=dict)

    @classmethod
    def from_airflow_config(cls) -> "TriggerPolicy":
        """The policy the deployment sets (``[stepcab] trigger_overrides_allow`` / ``trigger_limits``)."""
        try:
            from airflow.configuration import conf as airflow_conf

            allow = airflow_conf.get(CONFIG_SECTION, ALLOW_KEY, fallback="") or ""
            limits = airflow_conf.get(CONFIG_SECTION, LIMITS_KEY, fallback="") or ""
        except Exception:  # pragma: no cover - no Airflow config outside a deployment
            allow = os.environ.get("AIRFLOW__STEPCAB__TRIGGER_OVERRIDES_ALLOW", "")
            limits = os.environ.get("AIRFLOW__STEPCAB__TRIGGER_LIMITS", "")
        patterns = tuple(p for p in re.split(r"[,\s]+", allow) if p)
        return cls(allow=patterns, limits=parse_limits(limits, f"[{CONFIG_SECTION}] {LIMITS_KEY}"))

    def widened(self, path: str) -> bool:
        """The deployer allows the trigger to set ``path`` (``backend.native.virtual_env``)."""
        return any(fnmatch.fnmatchcase(path, p) for p in self.allow)

    def limits_for(self, recipe_limits: dict) -> dict:
        """Effective limits: the stricter of the deployer's and the recipe's for each name."""
        out = dict(recipe_limits)
        for name, value in self.limits.items():
            out[name] = min(value, out.get(name, value))
        return out


def recipe_limits(config_tree: Any) -> dict:
    """``opts.airflow.trigger_limits`` of a recipe file's merged config (``{}`` when absent)."""
    opts = config_tree.get("opts") if isinstance(config_tree, dict) else None
    section = opts.get("airflow") if isinstance(opts, dict) else None
    values = section.get("trigger_limits") if isinstance(section, dict) else None
    return parse_limits(values, "opts.airflow.trigger_limits") if values else {}


def _leaves(tree: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif not isinstance(tree, dict):
        yield prefix, tree


def check_backend(where: str, backend: Any, *, allowed_select: Callable[[], dict], policy: TriggerPolicy,
                  limits: dict) -> list:
    """Problems (messages) with one ``steps.<s>.backend`` override, ``[]`` when the policy allows it.

    :param where: ``conf.steps.<key>.backend``.
    :param allowed_select: ``() -> {step path: [backend names the files allow]}`` for the matched steps.
    :param limits: effective resource limits (:meth:`TriggerPolicy.limits_for`).
    """
    if isinstance(backend, (str, list)):
        backend = {"select": backend}
    if not isinstance(backend, dict):
        return [f"{where}: expected a mapping like {{select: native}}"]
    errors = []
    for path, value in _leaves(backend, ""):
        key = f"{where}.{path}"
        if policy.widened(f"backend.{path}"):
            continue
        if path == "select":
            errors += _check_select(key, value, allowed_select())
        elif path in RESOURCE_KNOBS:
            errors += _check_knob(key, path, value, limits)
        else:
            errors.append(f"{key}: may only be set in recipe/cab files or the Airflow config, not at "
                          f"trigger time (a deployer may allow it: [{CONFIG_SECTION}] {ALLOW_KEY} = backend.{path})")
    return errors


def _check_select(key: str, value: Any, allowed: dict) -> list:
    from airflow_provider_stepcab.recipe.backends import select_list

    try:
        names = select_list(value)
    except ValueError as exc:
        return [f"{key}: {exc}"]
    errors = []
    for step, ok in allowed.items():
        bad = [n for n in names if n not in ok]
        if bad:
            errors.append(f"{key}: {', '.join(map(repr, bad))} not among the backends the files allow "
                          f"for step '{step}' ({', '.join(ok) or 'none'})")
    return errors


def _check_knob(key: str, path: str, value: Any, limits: dict) -> list:
    name, parser = RESOURCE_KNOBS[path]
    try:
        amount = parser(value)
    except ValueError as exc:
        return [f"{key}: {exc}"]
    if name not in limits:
        return [f"{key}: no trigger-time limit for '{name}' is set, so only files may set it (set "
                f"opts.airflow.trigger_limits.{name} in the recipe or [{CONFIG_SECTION}] {LIMITS_KEY})"]
    if amount > limits[name]:
        return [f"{key}: {value!r} exceeds the trigger-time limit for '{name}'"]
    return []


def check_workdir(key: str, value: Any) -> list:
    """A trigger-time working directory: a literal absolute path (no ``~``, ``$VAR``, ``{}``
    placeholders or control characters: it is data, never expanded)."""
    if not isinstance(value, str):
        return [f"{key}: expected a path, got {value!r}"]
    if not os.path.isabs(value) or any(c in value for c in "${}") or not value.isprintable():
        return [f"{key}: {value!r}: a trigger-time working directory must be a literal absolute path "
                "(no ~, $VARS, {placeholders} or control characters)"]
    return []


def check_cache(key: str, value: Any) -> list:
    """The run's step cache mode: ``on`` (use and write records), ``off`` (neither) or ``refresh``
    (run every step, write new records); ``true``/``false`` mean ``on``/``off``."""
    if value is True or value is False or value in CACHE_MODES:
        return []
    return [f"{key}: expected one of {', '.join(CACHE_MODES)}, got {value!r}"]


def check_param(key: str, schema: Any, value: Any) -> tuple[Any, list]:
    """``(coerced value, problems)`` of a trigger-time value for a parameter (dtype and choices)."""
    if schema is None or value is None:
        return value, []
    dtype = getattr(schema, "dtype", None)
    if dtype is not None and hasattr(dtype, "validate"):
        try:
            value = dtype.validate(value)
        except (ValueError, TypeError) as exc:
            return value, [f"{key}: invalid value {value!r} for dtype {schema.dtype_str}: {exc}"]
    if schema.choices and value not in schema.choices:
        return value, [f"{key}: {value!r} is not one of the allowed choices {list(schema.choices)}"]
    if schema.element_choices and isinstance(value, (list, tuple)):
        bad = [v for v in value if v not in schema.element_choices]
        if bad:
            return value, [f"{key}: element(s) {bad!r} not among the allowed choices {list(schema.element_choices)}"]
    return value, []


__all__ = ["TriggerPolicy", "PolicyViolation", "RESOURCE_KNOBS", "LIMIT_PARSERS", "check_backend",
           "check_workdir", "check_cache", "check_param", "CACHE_PARAM", "CACHE_MODES", "recipe_limits", "parse_limits"]
