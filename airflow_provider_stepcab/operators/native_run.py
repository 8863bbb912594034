"""The run-time half of :class:`~.native.StepcabNativeOperator`: a step's native command line,
environment and process (see :mod:`.native`); imported when a step runs natively.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_stepcab.operators.resolve import ResolvedStep
from airflow_provider_stepcab.operators.running import attached, task_logger
from airflow_provider_stepcab.ui.capture import note_executed


def native_env(op: Any, step: ResolvedStep) -> dict:
    """The process environment: the worker's, ``management.environment``, recipe dir on PYTHONPATH."""
    env = dict(os.environ)
    env.update(step.env)
    recipe_dir = os.path.dirname(os.path.abspath(op.recipe_file))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (recipe_dir, env.get("PYTHONPATH")) if p)
    return env


def run_native(op: Any, step: ResolvedStep, context: Any) -> Any:
    """Run ``step`` natively, streaming lines into ``op``'s log; return the ``RunResult``."""
    from airflow_provider_stepcab.plan.step_plan import native_command
    from airflow_provider_stepcab.recipe.wranglers import Wranglers
    from airflow_provider_stepcab.runtime.native import NativeRunner

    argv = native_command(step, python=sys.executable).command
    note_executed(step, argv=argv)
    op.log.info("running: %s", " ".join(argv))
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    runner = NativeRunner()
    try:
        with attached(op, runner, passthrough=(OSError,)):
            return runner.run(argv, env=native_env(op, step), cwd=str(step.workdir.path), timeout=timeout,
                              wranglers=Wranglers.for_cab(step.cab), log=task_logger(op))
    except OSError as exc:  # e.g. the command does not exist
        raise AirflowException(f"step {step.fqname}: cannot run {argv[0]!r}: {exc}") from exc

