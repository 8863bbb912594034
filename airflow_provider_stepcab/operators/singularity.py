"""Run a cab step in Singularity/Apptainer (Stimela's ``singularity`` backend).

Run-time resolution is the base's (:class:`~.base.StepcabBaseOperator`); only the mechanism
differs from the native operator:

1. the executable is found when the task runs (``backend.singularity.executable``, else
   ``apptainer``, else ``singularity`` on ``PATH``);
2. the ``exec`` command line is planned by
   :func:`~airflow_provider_stepcab.plan.singularity.singularity_argv_for_step` (Stimela 2.1.4's
   argv, plus ``management.environment`` in ``--env``);
3. a missing image is built (``auto_build``; ``rebuild`` forces it) with
   ``<exe> build <simg> docker://<image>``;
4. bind sources are checked, ``mkdir`` binds created, fresh temporary directories made for ``/tmp``
   and ephemeral binds (removed afterwards unless ``clean_tmp`` is off);
5. the process runs in its own process group, its output through the cab's wranglers into the
   task log; :meth:`StepcabSingularityOperator.on_kill` and ``execution_timeout`` kill the group.

:func:`run_singularity` also runs a step of another class's task whose trigger-time ``conf``
selects singularity (see :data:`~.base.LOCAL_RUNNERS`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_stepcab.operators.base import StepcabBaseOperator

if TYPE_CHECKING:
    from airflow_provider_stepcab.operators.resolve import ResolvedStep

#: images (re)built by this worker process: ``rebuild`` happens once per process, as in Stimela
_REBUILT: set = set()


class StepcabSingularityOperator(StepcabBaseOperator):
    """Run one recipe step with ``singularity exec`` / ``apptainer exec``.

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to the cab step.
    :param backend: parse-time backend preference (a trigger-time conf override wins); by default
        the recipe's ``select`` decides, as in Stimela (``singularity,native``: cabs without an
        image run natively).
    :param loop_value: this task's ``for_loop`` value when mapped over a loop.
    """

    mechanism = "singularity"
    ui_color = "#e3ecf7"

    def run_step(self, step: ResolvedStep, context: Any) -> Any:
        return run_singularity(self, step, context)


def task_logger(op: Any) -> Any:
    """``log(level, text)`` writing into the task log."""
    task_log = op.log

    def show(level: int, line: str) -> None:
        task_log.log(level, "%s", line)

    return show


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


def run_singularity(op: StepcabBaseOperator, step: ResolvedStep, context: Any) -> Any:
    """Run ``step`` in Singularity, streaming into ``op``'s log; return the ``RunResult``."""
    from airflow_provider_stepcab.plan.images import ImageError
    from airflow_provider_stepcab.plan.singularity import ContainerPlanError
    from airflow_provider_stepcab.recipe.wranglers import Wranglers
    from airflow_provider_stepcab.runtime import containers as C

    opts = step.backend
    sing = opts.singularity
    show = task_logger(op)
    cwd = str(step.workdir.path)
    try:
        exe = C.find_singularity(sing.executable)
        command = C.container_command_argv(step.cab, step.params, step.ns)
        plan = plan_singularity(step, executable=exe, command=command)
        C.ensure_singularity_image(plan, log=show, auto_build=bool(sing.auto_build), rebuild=bool(sing.rebuild),
                                   rebuilt=_REBUILT)
    except (C.ContainerError, ContainerPlanError, ImageError) as exc:
        raise AirflowException(f"step {step.fqname}: {exc}") from None
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    runner = C.ContainerRunner(rlimits=opts.rlimits or None)
    if isinstance(op, StepcabSingularityOperator):
        op._runner = runner
    try:
        with C.prepared_mounts(plan, clean_tmp=bool(sing.clean_tmp), log=show) as argv:
            op.log.info("running: %s", " ".join(argv))
            return C.run_container(argv, runner=runner, log=show, cwd=cwd, env=dict(os.environ),
                                   timeout=timeout, wranglers=Wranglers.for_cab(step.cab),
                                   command_name=os.path.basename(command[0]) if command else None)
    except C.ContainerError as exc:
        raise AirflowException(f"step {step.fqname}: {exc}") from None
    except BaseException:
        runner.kill()  # Airflow's own timeout / SIGTERM landed here: leave no orphans
        raise
    finally:
        if isinstance(op, StepcabSingularityOperator):
            op._runner = None

