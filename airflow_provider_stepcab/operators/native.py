"""Run a cab step as a local process on the Airflow worker (Stimela's ``native`` backend).

The command line comes from :func:`~airflow_provider_stepcab.plan.step_plan.native_command`
(every flavour: ``binary``, ``python``, ``python-code``, ``casa-task``); the process runs
through :class:`~airflow_provider_stepcab.runtime.native.NativeRunner` in its own process
group, in the run's working directory, with every output line passed through the cab's
wranglers and streamed into the task log. ``backend.native.virtual_env`` is honoured,
``management.environment`` is added to the environment and the recipe file's directory
is put on ``PYTHONPATH`` (so ``python`` flavour cabs can import modules shipped next to the
recipe). ``execution_timeout`` kills the process group; so does :meth:`on_kill`.

The run-time half (command line, environment, process) is :mod:`.native_run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_stepcab.operators.base import StepcabBaseOperator

if TYPE_CHECKING:
    from airflow_provider_stepcab.operators.resolve import ResolvedStep


class StepcabNativeOperator(StepcabBaseOperator):
    """Run one recipe step natively (a subprocess of the worker).

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to the cab step.
    :param backend: parse-time backend preference (a trigger-time conf override wins).
    :param loop_value: this task's ``for_loop`` value when mapped over a loop.
    """

    mechanism = "native"
    ui_color = "#dff0d8"

    def run_step(self, step: ResolvedStep, context: Any) -> Any:
        from airflow_provider_stepcab.operators.native_run import run_native

        return run_native(self, step, context)
