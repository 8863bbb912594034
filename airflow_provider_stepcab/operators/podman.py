"""Run a cab step in a Podman (or Docker) container — stepcab's own backend.

Settings live in ``backend.podman`` (``backend.docker`` for Docker; see
:class:`~airflow_provider_stepcab.recipe.backend_schema.PodmanOptions`). The command line is
:func:`~airflow_provider_stepcab.plan.podman.podman_argv_for_step`: the same image resolution and
bind mounts as Singularity, ``--workdir`` = the run's working directory, ``--user`` = the worker's
``uid:gid`` (``user: auto``) so outputs are owned by the task's user, ``--network none`` by default.

Each container gets a deterministic name from the task instance
(``stepcab-<dag>-<task>-<run>-<map index>-<try>-<hash>``); :meth:`StepcabPodmanOperator.on_kill`
(and ``execution_timeout``) run ``podman stop -t <stop_timeout> <name>``, kill the local
``podman run`` process group and ``podman rm -f`` the container. A missing image is pulled when
``auto_pull`` allows it (no registry is needed for images made with ``podman import``).

:func:`run_podman`/:func:`run_docker` also run steps of other classes' tasks whose trigger-time
``conf`` selects those backends (see :data:`~.registry.LOCAL_RUNNERS`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_stepcab.operators.base import StepcabBaseOperator

if TYPE_CHECKING:
    from airflow_provider_stepcab.operators.resolve import ResolvedStep


class StepcabPodmanOperator(StepcabBaseOperator):
    """Run one recipe step with ``podman run`` (or ``docker run``).

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to the cab step.
    :param backend: parse-time backend preference; default ``["podman", "native"]`` (cabs without an
        image run natively). A trigger-time conf override wins.
    :param loop_value: this task's ``for_loop`` value when mapped over a loop.
    :param engine: ``podman`` or ``docker`` (which settings section and executable to use).
    """

    mechanism = "podman"
    ui_color = "#efe3f7"

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Any, backend: Any = None,
                 loop_value: Any = None, engine: str = "podman", **kwargs: Any) -> None:
        if engine not in ("podman", "docker"):
            raise ValueError(f"engine must be 'podman' or 'docker', not {engine!r}")
        super().__init__(recipe_file=recipe_file, recipe_name=recipe_name, step_path=step_path,
                         backend=backend if backend is not None else [engine, "native"], loop_value=loop_value,
                         **kwargs)
        self.engine = engine
        self.mechanism = engine

    def run_step(self, step: ResolvedStep, context: Any) -> Any:
        return run_engine(self, step, context, engine=self.engine)



def task_container_name(context: Any, step: ResolvedStep) -> str:
    """The deterministic container name of this task instance."""
    from airflow_provider_stepcab.plan.podman import container_name

    ti = context["ti"]
    return container_name(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1),
                          getattr(ti, "try_number", 0))


def run_engine(op: StepcabBaseOperator, step: ResolvedStep, context: Any, *, engine: str = "podman") -> Any:
    """Run ``step`` with ``engine`` (``podman``/``docker``), streaming into ``op``'s log."""
    from airflow_provider_stepcab.operators.running import run_in_container, task_logger
    from airflow_provider_stepcab.plan.images import ImageError
    from airflow_provider_stepcab.plan.singularity import ContainerPlanError
    from airflow_provider_stepcab.plan.step_plan import podman_command
    from airflow_provider_stepcab.recipe.backends import engine_options
    from airflow_provider_stepcab.recipe.errors import Problems
    from airflow_provider_stepcab.runtime import containers as C

    problems = Problems()
    settings = engine_options(step.backend, engine, problems=problems)
    for p in problems:
        op.log.warning("%s", p)
    if problems.errors:
        raise AirflowException(f"step {step.fqname}: invalid backend.{engine} settings")
    show = task_logger(op)
    try:
        exe = C.find_engine(engine, settings.executable)
        planned = podman_command(step, engine=engine, settings=settings, executable=exe, fs=C.LocalFs(),
                                 name=task_container_name(context, step), uid_gid=(os.getuid(), os.getgid()))
        plan = planned.plan
        C.ensure_engine_image(plan, log=show, auto_pull=bool(settings.auto_pull))
    except (C.ContainerError, ContainerPlanError, ImageError) as exc:
        raise AirflowException(f"step {step.fqname}: {exc}") from None
    runner = C.ContainerRunner(stop_argv=plan.stop_argv(settings.stop_timeout), cleanup_argv=plan.rm_argv,
                               stop_timeout=float(settings.stop_timeout) + 20.0, rlimits=step.backend.rlimits or None,
                               usage_note=f"rusage of the {engine} client, not of the container")
    # docker: remove a container left by an earlier attempt (podman's `run --replace` does that)
    return run_in_container(op, step, plan, runner, planned.argv, clean_tmp=bool(settings.clean_tmp),
                            before=(plan.rm_argv,) if engine == "docker" else ())


def run_podman(op: StepcabBaseOperator, step: "ResolvedStep", context: Any) -> Any:
    """:func:`run_engine` with podman (the runner of :data:`~.registry.LOCAL_RUNNERS`)."""
    return run_engine(op, step, context, engine="podman")


def run_docker(op: StepcabBaseOperator, step: "ResolvedStep", context: Any) -> Any:
    """:func:`run_engine` with docker (the runner of :data:`~.registry.LOCAL_RUNNERS`)."""
    return run_engine(op, step, context, engine="docker")
