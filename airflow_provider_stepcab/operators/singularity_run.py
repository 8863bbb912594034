"""The run-time half of :class:`~.singularity.StepcabSingularityOperator` (see :mod:`.singularity`):
plan the ``exec`` command line, build a missing image, prepare binds and run the container;
imported when a step runs in Singularity.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_stepcab.operators.resolve import ResolvedStep
from airflow_provider_stepcab.operators.running import run_in_container, task_logger


def run_singularity(op: Any, step: ResolvedStep, context: Any) -> Any:
    """Run ``step`` in Singularity, streaming into ``op``'s log; return the ``RunResult``."""
    from airflow_provider_stepcab.plan.images import ImageError
    from airflow_provider_stepcab.plan.singularity import ContainerPlanError
    from airflow_provider_stepcab.plan.step_plan import singularity_command
    from airflow_provider_stepcab.runtime import containers as C

    opts = step.backend
    sing = opts.singularity
    show = task_logger(op)
    try:
        exe = C.find_singularity(sing.executable)
        planned = singularity_command(step, executable=exe, fs=C.LocalFs())
        C.ensure_singularity_image(planned.plan, log=show, auto_build=bool(sing.auto_build),
                                   rebuild=bool(sing.rebuild), rebuilt=C.REBUILT_IMAGES)
    except (C.ContainerError, ContainerPlanError, ImageError) as exc:
        raise AirflowException(f"step {step.fqname}: {exc}") from None
    runner = C.ContainerRunner(rlimits=opts.rlimits or None)
    return run_in_container(op, step, planned.plan, runner, planned.argv, clean_tmp=bool(sing.clean_tmp))
