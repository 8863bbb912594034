"""Run a cab step in Singularity/Apptainer (Stimela's ``singularity`` backend).

Run-time resolution is the base's (:class:`~.base.StepcabBaseOperator`); only the mechanism
differs from the native operator:

1. the executable is found when the task runs (``backend.singularity.executable``, else
   ``apptainer``, else ``singularity`` on ``PATH``);
2. the ``exec`` command line is planned by
   :func:`~airflow_provider_stepcab.plan.step_plan.singularity_command` (Stimela 2.1.4's
   argv, plus ``management.environment`` in ``--env``);
3. a missing image is built (``auto_build``; ``rebuild`` forces it) with
   ``<exe> build <simg> docker://<image>``;
4. bind sources are checked, ``mkdir`` binds created, fresh temporary directories made for ``/tmp``
   and ephemeral binds (removed afterwards unless ``clean_tmp`` is off);
5. the process runs in its own process group, its output through the cab's wranglers into the
   task log; :meth:`StepcabSingularityOperator.on_kill` and ``execution_timeout`` kill the group.

The run-time half is :mod:`.singularity_run`, whose :func:`~.singularity_run.run_singularity`
also runs a step of another class's task whose trigger-time ``conf`` selects singularity (see
:data:`~.registry.LOCAL_RUNNERS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_stepcab.operators.base import StepcabBaseOperator

if TYPE_CHECKING:
    from airflow_provider_stepcab.operators.resolve import ResolvedStep


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
        from airflow_provider_stepcab.operators.singularity_run import run_singularity

        return run_singularity(self, step, context)
