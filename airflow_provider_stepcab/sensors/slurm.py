"""``SlurmJobSensor``: wait (deferred) for a Slurm job that something else submitted.

The job is given by id, or by name (the newest job of that name in squeue/sacct). Without a
wrapper job directory Slurm's state decides (``COMPLETED`` = success); with ``job_dir`` of a
stepcab batch script the wrapper's exit-code file decides, as for
:class:`~..operators.slurm.StepcabSlurmOperator`. Killing the sensor does not cancel the job
unless ``cancel_on_kill`` is set. The waiting is shared with every other Slurm trigger of the
same cluster (one squeue/sacct per interval).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException


class SlurmJobSensor(BaseSensorOperator):
    """Wait for an existing Slurm job to finish.

    :param ssh_conn_id: Airflow SSH connection of the cluster.
    :param job_id: the job id (templated), or
    :param job_name: the job name (templated; the newest matching job is watched).
    :param job_dir: a stepcab wrapper's job directory: its exit-code file then decides.
    :param poll_interval: seconds between cluster queries.
    :param stream_logs: log the wrapper's stdout/stderr while waiting (needs ``job_dir``).
    :param cancel_on_kill: ``scancel`` the job when the task is killed.
    :param missing_grace: seconds the job may be unknown to Slurm before the sensor fails.
    """

    template_fields: Sequence[str] = ("job_id", "job_name", "job_dir")
    ui_color = "#e3e7f7"

    def __init__(self, *, ssh_conn_id: str, job_id: Optional[str] = None, job_name: Optional[str] = None,
                 job_dir: Optional[str] = None, poll_interval: float = 10.0, stream_logs: bool = True,
                 cancel_on_kill: bool = False, missing_grace: float = 120.0, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(poke_interval=poll_interval, **kwargs)
        if not job_id and not job_name:
            raise ValueError("SlurmJobSensor needs job_id or job_name")
        self.ssh_conn_id, self.job_id, self.job_name, self.job_dir = ssh_conn_id, job_id, job_name, job_dir
        self.poll_interval, self.stream_logs = float(poll_interval), stream_logs
        self.cancel_on_kill, self.missing_grace = cancel_on_kill, float(missing_grace)

    def poke(self, context: Any) -> bool:  # pragma: no cover - the sensor always defers
        return False

    def _find(self) -> str:
        from airflow_provider_stepcab.hooks.slurm import SlurmHook

        hook = SlurmHook(self.ssh_conn_id)
        try:
            jobs = hook.jobs(names=[self.job_name])
        finally:
            hook.close()
        if not jobs:
            raise AirflowException(f"no Slurm job named {self.job_name!r} on {self.ssh_conn_id}")
        return max(jobs, key=int)

    def execute(self, context: Any) -> Any:
        from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

        job_id = str(self.job_id) if self.job_id else self._find()
        self.log.info("waiting for Slurm job %s%s on %s", job_id,
                      f" ({self.job_name})" if self.job_name else "", self.ssh_conn_id)
        self.defer(trigger=SlurmJobTrigger(
            ssh_conn_id=self.ssh_conn_id, job_id=job_id, job_dir=self.job_dir or "", job_name=self.job_name or "",
            poll_interval=self.poll_interval, stream_logs=self.stream_logs and bool(self.job_dir),
            missing_grace=self.missing_grace, cancel_on_kill=self.cancel_on_kill,
            deadline=None), method_name="execute_complete",
            timeout=None)

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        from airflow_provider_stepcab.triggers.events import SlurmJobEvent

        ev = SlurmJobEvent.from_dict(event)
        if ev.succeeded:
            self.log.info("Slurm job %s finished: %s", ev.job_id, ev.message)
            return ev.to_dict()
        tail = "\n".join(ev.tail)
        raise AirflowException(f"Slurm job {ev.job_id} {ev.status}: {ev.message}"
                               + (f"\n--- last output lines ---\n{tail}" if tail else ""))


__all__ = ["SlurmJobSensor"]
