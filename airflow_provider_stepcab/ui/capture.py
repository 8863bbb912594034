"""Build and push the ``stepcab_step`` record of a resolved step (called where a step finishes or
is skipped, :mod:`..operators.running`).

Nothing is rebuilt here: the parameters and where each came from are the resolver's
(``ResolvedStep.params`` / ``.sources``, :mod:`..recipe.sources`), the command line and the
backend command around it are what the mechanism ran, noted with :func:`note_executed` on the
step just before it started it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from airflow_provider_stepcab.ui.records import STEP_KEY, cab_doc, image_name, step_record


def note_executed(step: Any, *, argv: list, command: Optional[list] = None, script: Optional[str] = None,
                  pod: Optional[dict] = None, pod_name: Optional[str] = None,
                  pod_phase: Optional[str] = None) -> None:
    """Remember on ``step`` what its mechanism runs (the Step view shows it).

    :param argv: the cab's command line, exactly as executed.
    :param command: the full command around it (the container engine's argv), if any.
    :param script: the batch script submitted (Slurm).
    :param pod: the pod spec (Kubernetes), with ``pod_name`` and ``pod_phase`` once known.
    """
    step.executed = {"argv": [str(a) for a in argv], "command": [str(a) for a in command] if command else None,
                     "script": script, "pod": pod, "pod_name": pod_name, "pod_phase": pod_phase}


def _outputs(step: Any) -> list:
    out = []
    for name, p in step.cab.outputs.items():
        value = step.params.get(name)
        if p.dtype is not None and p.dtype.is_file and isinstance(value, str) and "://" not in value:
            out.append(os.path.normpath(step.workdir.resolve(value)))
    return out


def record_for(step: Any) -> dict:
    """The ``stepcab_step`` record of ``step`` (resolved, and run unless it is skipped)."""
    from airflow_provider_stepcab.operators.resolve import plain

    params = plain(step.params)
    sources = getattr(step, "sources", None) or {}
    ran = getattr(step, "executed", None) or {}
    return step_record(
        fqname=step.fqname, cab=step.cab.name, backend=step.backend_name, image=image_name(step.cab),
        workdir=str(step.workdir.path), argv=ran.get("argv") or [], command=ran.get("command"),
        script=ran.get("script"), pod=ran.get("pod"), pod_name=ran.get("pod_name"),
        pod_phase=ran.get("pod_phase"), params=params,
        sources={k: sources.get(k, "step") for k in params}, outputs=_outputs(step),
        skip_reason=step.skip_reason, cache=getattr(step, "cache_decision", None), doc=cab_doc(step.cab))


def push_step_record(op: Any, step: Any, context: Any) -> None:
    """Push :func:`record_for` as the ``stepcab_step`` XCom; a record that cannot be built is
    logged, never a task failure."""
    try:
        value = record_for(step)
    except Exception as exc:  # noqa: BLE001 - informative data only
        op.log.warning("stepcab: no step record for the UI: %s", exc)
        return
    context["ti"].xcom_push(key=STEP_KEY, value=value)
