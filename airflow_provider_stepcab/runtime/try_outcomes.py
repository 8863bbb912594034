"""How each try of a task ended, kept in the run's working directory for its retries.

Airflow clears a task's XComs when a new try starts, and a pod is deleted when it ends, so a retry
cannot ask either why the previous try failed. Slurm keeps its jobs in ``sacct`` (found by their
deterministic names); for pods stepcab writes one small JSON file per task instance:
``<workdir>/.stepcab/tries/<dag>.<run>.<task>[.<map>].json`` = ``{"<try>": {"reason": ...,
"exit_code": ...}}``. The working directory is shared by the workers (as the pods' outputs are:
docs/kubernetes.md), so a retry on another worker reads it too. No Airflow import here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .workdir import safe_component

DIRECTORY = os.path.join(".stepcab", "tries")


def outcomes_path(workdir: Any, *, dag_id: str, run_id: str, task_id: str, map_index: Optional[int]) -> Path:
    """The file holding the tries of one task instance."""
    name = ".".join(safe_component(p) for p in (dag_id, run_id, task_id))
    if map_index is not None and map_index >= 0:
        name += f".{int(map_index)}"
    return Path(workdir) / DIRECTORY / f"{name}.json"


def read_outcomes(path: Path) -> dict:
    """``{try_number: {"reason", "exit_code"}}`` (empty when none was recorded or the file is bad)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {int(k): v for k, v in data.items() if str(k).isdigit() and isinstance(v, dict)}


def record_outcome(path: Path, try_number: int, *, reason: str, exit_code: Optional[int]) -> None:
    """Add (or replace) one try's outcome (atomic rewrite)."""
    data = read_outcomes(path)
    data[int(try_number)] = {"reason": reason, "exit_code": exit_code}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in sorted(data.items())}))
    os.replace(tmp, path)


def earlier_reasons(path: Path, try_number: int) -> list:
    """The reasons of the tries before ``try_number``, oldest first."""
    return [v.get("reason") for k, v in sorted(read_outcomes(path).items()) if k < try_number]


__all__ = ["DIRECTORY", "outcomes_path", "read_outcomes", "record_outcome", "earlier_reasons"]
