"""``StatusFileSensor``: wait (deferred) for a result file while logging a status file's progress.

The SemWES pattern: a long job started elsewhere reports progress by rewriting a status file and
delivers a result file (or an error marker). The sensor defers at once to
:class:`~..triggers.status_file.StatusFileTrigger`, which polls the files locally or over SFTP;
the result (parsed JSON or text) becomes the task's XCom ``return_value``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

try:  # Airflow 3: sensor timeouts fail without retries
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore


class StatusFileSensor(BaseSensorOperator):
    """Wait for ``result_path`` to be complete; fail on ``error_path`` or timeout.

    :param result_path: the result file (templated).
    :param status_path: a progress file logged whenever it changes (templated).
    :param error_path: an error marker: its existence fails the task with its content (templated).
    :param done_marker: a file whose existence says the result is complete (templated); without
        it a ``.json`` result must parse, other results must stop growing between two polls.
    :param ssh_conn_id: read the files over SFTP through this SSH connection (``None``: local files).
    :param poll_interval: seconds between polls.
    :param timeout: seconds before the sensor fails (``AirflowSensorTimeout``, no retries).
    :param max_bytes: the most bytes of the result pushed to XCom.
    """

    template_fields: Sequence[str] = ("result_path", "status_path", "error_path", "done_marker")
    ui_color = "#f7f1dc"

    def __init__(self, *, result_path: str, status_path: Optional[str] = None, error_path: Optional[str] = None,
                 done_marker: Optional[str] = None, ssh_conn_id: Optional[str] = None, poll_interval: float = 5.0,
                 max_bytes: int = 1 << 20, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(poke_interval=poll_interval, **kwargs)
        self.result_path, self.status_path, self.error_path = result_path, status_path, error_path
        self.done_marker, self.ssh_conn_id = done_marker, ssh_conn_id
        self.poll_interval, self.max_bytes = float(poll_interval), int(max_bytes)

    def poke(self, context: Any) -> bool:  # pragma: no cover - the sensor always defers
        return False

    def execute(self, context: Any) -> Any:
        from airflow_provider_stepcab.triggers.status_file import StatusFileTrigger

        timeout = float(self.timeout) if self.timeout else None
        self.log.info("waiting for %s%s (status %s, error marker %s)", self.result_path,
                      f" on {self.ssh_conn_id}" if self.ssh_conn_id else "", self.status_path, self.error_path)
        self.defer(trigger=StatusFileTrigger(
            result_path=self.result_path, status_path=self.status_path, error_path=self.error_path,
            done_marker=self.done_marker, ssh_conn_id=self.ssh_conn_id, poll_interval=self.poll_interval,
            timeout=timeout, max_bytes=self.max_bytes), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        from airflow_provider_stepcab.triggers.events import StatusFileEvent

        ev = StatusFileEvent.from_dict(event)
        if ev.last_status is not None:
            self.log.info("last status: %s", ev.last_status)
        if ev.status == "success":
            self.log.info("result %s is complete", ev.result_path)
            return ev.result
        if ev.status == "timeout":
            raise AirflowSensorTimeout(f"{ev.message} (last status: {ev.last_status})")
        raise AirflowException(f"{ev.message} (last status: {ev.last_status})")


__all__ = ["StatusFileSensor"]
