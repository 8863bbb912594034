"""What step tasks share without importing the operator classes: the ``stepcab_params`` XCom key
and the runners of the backends a task may be switched to at trigger time.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

#: XCom key holding every resolved parameter (inputs and outputs) of a step.
XCOM_PARAMS_KEY = "stepcab_params"

#: The local backends any step task can run a step with when the trigger-time conf picks one other
#: than its class's mechanism: name -> (``"module:function"`` of the runner
#: ``(operator, step: ResolvedStep, context) -> RunResult``, the executable it needs or ``None``).
#: Imported and probed (on the worker's ``PATH``) only when a step is resolved.
LOCAL_RUNNERS: dict[str, tuple[str, Optional[str]]] = {
    "native": ("airflow_provider_stepcab.operators.native_run:run_native", None),
    "singularity": ("airflow_provider_stepcab.operators.singularity_run:run_singularity", "singularity"),
    "podman": ("airflow_provider_stepcab.operators.podman:run_podman", "podman"),
    "docker": ("airflow_provider_stepcab.operators.podman:run_docker", "docker"),
}

#: Extra runners (name -> callable) added with :func:`register_backend_runner`; they win over
#: :data:`LOCAL_RUNNERS`.
BACKEND_RUNNERS: dict[str, Callable[..., Any]] = {}


def register_backend_runner(name: str, runner: Callable[..., Any]) -> None:
    """Make ``runner`` run steps whose effective backend is ``name``."""
    BACKEND_RUNNERS[name] = runner
