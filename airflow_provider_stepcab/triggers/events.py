"""Typed payloads of the events stepcab's triggers fire (``TriggerEvent(payload.to_dict())``).

Event payloads must be JSON-serialisable; operators turn them back with ``from_dict`` (which
ignores unknown keys, so a trigger from a newer version does not break an older worker).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

SUCCESS = "success"
FAILED = "failed"
ERROR = "error"          # the trigger itself could not finish (SSH gone for too long, bad input)
TIMEOUT = "timeout"


class _Payload:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"expected a {cls.__name__} mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SlurmJobEvent(_Payload):
    """How a Slurm job ended (or why the wait stopped).

    :param status: ``success`` | ``failed`` | ``error`` | ``timeout``.
    :param exit_code: the command's exit code from the wrapper's ``exitcode`` file (``None``: none written).
    :param slurm_state: Slurm's base state (``COMPLETED``, ``TIMEOUT``, ``CANCELLED`` ...), when known.
    :param message: a one-line human explanation (used in task failures).
    :param log_offsets: bytes of ``stdout.log`` / ``stderr.log`` already copied into the task log.
    :param tail: the last lines of the job's output (stdout and stderr, for error reports).
    """

    status: str
    job_id: str
    job_name: str = ""
    job_dir: str = ""
    exit_code: Optional[int] = None
    slurm_state: Optional[str] = None
    message: str = ""
    log_offsets: dict = field(default_factory=dict)
    tail: list = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS


@dataclass
class StatusFileEvent(_Payload):
    """How the wait on a status/result file ended.

    :param status: ``success`` | ``failed`` (error marker) | ``error`` (cannot read) | ``timeout``.
    :param result: the result file's content (parsed JSON when it is JSON, else text).
    :param last_status: the last status-file content seen (progress).
    :param message: a one-line human explanation.
    """

    status: str
    result_path: str = ""
    result: Any = None
    last_status: Optional[str] = None
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS


__all__ = ["SlurmJobEvent", "StatusFileEvent", "SUCCESS", "FAILED", "ERROR", "TIMEOUT"]
