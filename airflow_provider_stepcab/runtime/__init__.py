"""Running steps: processes, output streaming through wranglers (no Airflow import here)."""

from .native import NativeRunner, RlimitError, RunResult, check_rlimits
from .process import ExecutableNotFound, ProcessHandle, ProcessTimeout, run_streaming, spawn

__all__ = [
    "ExecutableNotFound", "NativeRunner", "ProcessHandle", "ProcessTimeout", "RlimitError", "RunResult",
    "check_rlimits", "run_streaming", "spawn",
]
