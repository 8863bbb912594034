"""Which operator class runs a step — the one place that picks operator classes.

The choice is made at parse time from the step's merged backend settings
(config ``opts.backend`` → outer recipe → inner recipe → cab → step, then
``opts.airflow.backend`` on top), without probing the machine:

* ``slurm.enable: true`` → :class:`~airflow_provider_stepcab.operators.slurm.StepcabSlurmOperator`
  (Slurm wraps the native or singularity plan of the step);
* otherwise the first enabled name in ``select`` (for container backends: only
  when the cab names an image) → its mechanism's class: ``kube`` →
  ``StepcabKubernetesOperator``, ``singularity`` → ``StepcabSingularityOperator``,
  ``podman``/``docker`` → ``StepcabPodmanOperator``, ``native`` → ``StepcabNativeOperator``.

Local mechanisms share run-time runners, so a trigger-time override
(``conf.steps.<step>.backend.select``) still switches between native,
singularity and podman in any of those classes, and a backend that turns out to
be unavailable on the worker falls back to the next one in ``select``.
Deferrable mechanisms (Slurm, Kubernetes) need their own class and so are
decided here.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from airflow_provider_stepcab.recipe.backends import _backend_of, effective_backend, select_backend
from airflow_provider_stepcab.recipe.errors import Problems

_CLASSES = {
    "native": "airflow_provider_stepcab.operators.native:StepcabNativeOperator",
    "singularity": "airflow_provider_stepcab.operators.singularity:StepcabSingularityOperator",
    "podman": "airflow_provider_stepcab.operators.podman:StepcabPodmanOperator",
    "docker": "airflow_provider_stepcab.operators.podman:StepcabPodmanOperator",
    "kube": "airflow_provider_stepcab.operators.kube:StepcabKubernetesOperator",
    "slurm": "airflow_provider_stepcab.operators.slurm:StepcabSlurmOperator",
}
_loaded: dict[str, Any] = {}


_memo: dict[str, str] = {}


def _memo_key(config_tree: Any, recipe_chain: Any, step: Any, override: Any) -> str:
    """Everything :func:`mechanism_for` depends on: the backend layers and whether the cab has an
    image. Parsing the merged backend options is the costly part of choosing a class (~1 ms a step,
    ``typing.get_type_hints`` per options dataclass) and most steps share the same layers."""
    base = ((config_tree or {}).get("opts") or {}).get("backend") if isinstance(config_tree, dict) else None
    layers = [base, *(_backend_of(r) for r in recipe_chain), _backend_of(step.cab), _backend_of(step), override]
    return repr((layers, bool(getattr(step.cab, "image", None))))


def mechanism_for(config_tree: Any, recipe_chain: Any, step: Any, override: Any = None) -> str:
    """The execution mechanism (a key of the class table) of one cab step."""
    try:
        key: Optional[str] = _memo_key(config_tree, recipe_chain, step, override)
    except Exception:  # noqa: BLE001 - an odd layer: just compute
        key = None
    if key is not None and key in _memo:
        return _memo[key]
    mechanism = _mechanism_for(config_tree, recipe_chain, step, override)
    if key is not None:
        if len(_memo) > 4096:
            _memo.clear()
        _memo[key] = mechanism
    return mechanism


def _mechanism_for(config_tree: Any, recipe_chain: Any, step: Any, override: Any = None) -> str:
    opts, _ = effective_backend(config_tree, recipe_chain, step.cab, step, override, problems=Problems())
    if opts.slurm is not None and opts.slurm.enable is True:
        return "slurm"
    name, _ = select_backend(opts, step.cab)
    return name if name in _CLASSES else "native"


def class_path_for(mechanism: str) -> str:
    """``"module:Class"`` of the operator class of ``mechanism`` (nothing imported)."""
    return _CLASSES[mechanism]


def operator_class_for(mechanism: str) -> Any:
    """Import (once) and return the operator class of ``mechanism``."""
    if mechanism not in _loaded:
        module, _, name = _CLASSES[mechanism].partition(":")
        _loaded[mechanism] = getattr(importlib.import_module(module), name)
    return _loaded[mechanism]


def choose_operator_class(config_tree: Any, recipe_chain: Any, step: Any,
                          override: Optional[Any] = None) -> Any:
    """Operator class for ``step`` (see the module docstring)."""
    return operator_class_for(mechanism_for(config_tree, recipe_chain, step, override))
