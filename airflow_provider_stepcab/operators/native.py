"""Run a cab step as a local process on the Airflow worker (Stimela's ``native`` backend).

The command line comes from :func:`~airflow_provider_stepcab.plan.flavours.build_flavour_argv`
(every flavour: ``binary``, ``python``, ``python-code``, ``casa-task``); the process runs
through :class:`~airflow_provider_stepcab.runtime.native.NativeRunner` in its own process
group, in the run's working directory, with every output line passed through the cab's
wranglers and streamed into the task log. ``backend.native.virtual_env`` is honoured,
``management.environment`` is added to the environment and the recipe file's directory
is put on ``PYTHONPATH`` (so ``python`` flavour cabs can import modules shipped next to the
recipe). ``execution_timeout`` kills the process group; so does :meth:`on_kill`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

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
        return run_native(self, step, context)


def native_argv(step: ResolvedStep) -> list:
    """The argv of ``step`` for the native backend (``virtual_env`` applied)."""
    from airflow_provider_stepcab.plan.flavours import build_flavour_argv
    from airflow_provider_stepcab.recipe.subst import substitute

    cab = step.cab
    subst = lambda text: substitute(text, step.ns)  # noqa: E731
    if (cab.flavour.kind or "binary") == "binary":
        cab = dataclasses.replace(cab, command=subst(cab.command),
                                  args=[subst(a) if isinstance(a, str) else a for a in cab.args])
    native = getattr(step.backend, "native", None)
    venv = getattr(native, "virtual_env", None) or None
    return list(build_flavour_argv(cab, step.params, python="python3" if venv else sys.executable,
                                   virtual_env=venv, substitute=subst, inline_yield=True))


def native_env(op: StepcabBaseOperator, step: ResolvedStep) -> dict:
    """The process environment: the worker's, ``management.environment``, recipe dir on PYTHONPATH."""
    env = dict(os.environ)
    env.update(step.env)
    recipe_dir = os.path.dirname(os.path.abspath(op.recipe_file))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (recipe_dir, env.get("PYTHONPATH")) if p)
    return env


def run_native(op: StepcabBaseOperator, step: ResolvedStep, context: Any) -> Any:
    """Run ``step`` natively, streaming lines into ``op``'s log; return the ``RunResult``."""
    from airflow_provider_stepcab.recipe.wranglers import Wranglers
    from airflow_provider_stepcab.runtime.native import NativeRunner

    argv = native_argv(step)
    op.log.info("running: %s", " ".join(argv))
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    runner = NativeRunner()
    if isinstance(op, StepcabNativeOperator):
        op._runner = runner
    task_log = op.log

    def show(level: int, line: str) -> None:
        task_log.log(level, "%s", line)

    try:
        return runner.run(argv, env=native_env(op, step), cwd=str(step.workdir.path), timeout=timeout,
                          wranglers=Wranglers.for_cab(step.cab), log=show)
    except OSError as exc:  # e.g. the command does not exist
        raise AirflowException(f"step {step.fqname}: cannot run {argv[0]!r}: {exc}") from exc
    except BaseException:
        runner.kill()  # Airflow's own execution_timeout / SIGTERM landed here: leave no orphans
        raise
    finally:
        if isinstance(op, StepcabNativeOperator):
            op._runner = None

