"""The run-time half of :class:`~.singularity.StepcabSingularityOperator` (see :mod:`.singularity`):
plan the ``exec`` command line, build a missing image, prepare binds and run the container;
imported when a step runs in Singularity (locally, or planned for a Slurm job).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_stepcab.operators.resolve import ResolvedStep
from airflow_provider_stepcab.operators.running import run_in_container, task_logger
from airflow_provider_stepcab.operators.singularity import StepcabSingularityOperator

#: images (re)built by this worker process: ``rebuild`` happens once per process, as in Stimela
_REBUILT: set = set()


def plan_singularity(step: ResolvedStep, *, executable: str, fs: Any = None, command: Any = None) -> Any:
    """The step's :class:`~..plan.singularity.SingularityPlan` (``::EPHn::`` placeholders kept).

    :param executable: ``argv[0]`` of the plan.
    :param fs: filesystem facts (default: this machine's, :class:`~..runtime.containers.LocalFs`).
    :param command: the cab's own argv, when already built.
    :raises ContainerPlanError: a bad bind setting or missing path; :class:`.images.ImageError`: no image.
    """
    from airflow_provider_stepcab.plan.images import images_section
    from airflow_provider_stepcab.plan.singularity import singularity_argv_for_step
    from airflow_provider_stepcab.runtime import containers as C

    if command is None:
        command = C.container_command_argv(step.cab, step.params, step.ns)
    return singularity_argv_for_step(step.cab, step.params, command, backend=step.backend,
                                     cwd=str(step.workdir.path), fs=fs or C.LocalFs(), executable=executable,
                                     images=images_section(step.config), extra_env=step.env)


class RemoteHomeFs:
    """This machine's filesystem facts (a filesystem shared with the cluster), but ``~`` is the
    cluster user's home: ``image_dir: ~/.singularity`` and ``~`` binds mean the remote user's."""

    def __init__(self, home: str):
        from airflow_provider_stepcab.runtime.containers import LocalFs

        self._local, self.home = LocalFs(), home.rstrip("/") or "/"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    def expanduser(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        return path


def run_singularity(op: Any, step: ResolvedStep, context: Any) -> Any:
    """Run ``step`` in Singularity, streaming into ``op``'s log; return the ``RunResult``."""
    from airflow_provider_stepcab.plan.images import ImageError
    from airflow_provider_stepcab.plan.singularity import ContainerPlanError
    from airflow_provider_stepcab.runtime import containers as C

    opts = step.backend
    sing = opts.singularity
    show = task_logger(op)
    try:
        exe = C.find_singularity(sing.executable)
        command = C.container_command_argv(step.cab, step.params, step.ns)
        plan = plan_singularity(step, executable=exe, command=command)
        C.ensure_singularity_image(plan, log=show, auto_build=bool(sing.auto_build), rebuild=bool(sing.rebuild),
                                   rebuilt=_REBUILT)
    except (C.ContainerError, ContainerPlanError, ImageError) as exc:
        raise AirflowException(f"step {step.fqname}: {exc}") from None
    runner = C.ContainerRunner(rlimits=opts.rlimits or None)
    return run_in_container(op, step, plan, runner, command, owner=StepcabSingularityOperator,
                            clean_tmp=bool(sing.clean_tmp))

