"""Deferred wait on Slurm jobs: one cluster query per interval, however many jobs wait.

Every :class:`SlurmJobTrigger` registers its job with a :class:`ClusterPoller` — one per SSH
connection id per event loop (the triggerer runs one loop; ``dag.test`` one per inline trigger),
kept in a module-level registry. The poller holds one asyncssh connection (``SSHHookAsync``) and,
each interval, runs for *all* registered jobs: one command reading the wrappers' files (exit
code, ``started``, log sizes), one ``squeue`` and — for jobs squeue no longer lists as active —
one ``sacct``. Triggers wait for the next snapshot and decide:

* the wrapper's ``exitcode`` file decides success; Slurm's state only explains deaths
  (``TIMEOUT``, ``OUT_OF_MEMORY``, ``NODE_FAIL``, ``PREEMPTED``, ``CANCELLED``, ``BOOT_FAIL``, ``DEADLINE``);
* grace windows: a job not yet in squeue/sacct right after submission (``missing_grace``), an exit
  file that lags behind Slurm's verdict (``exit_grace``; shorter when Slurm killed the job), a
  non-zero exit while Slurm still shows the job running (requeue);
* SSH failures close the connection and reconnect with backoff; only ``ssh_patience`` seconds of
  failure end the wait (an ``error`` event, not a verdict on the job);
* stdout/stderr are read by byte offset over one shared SFTP session and logged from the trigger
  (the triggerer writes trigger logs into the task's log), complete lines only;
* :meth:`SlurmJobTrigger.on_kill` (a user killed/cleared/marked the task) ``scancel``\\ s the job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Optional

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_stepcab.hooks.slurm import JobInfo, scancel_command
from airflow_provider_stepcab.triggers.cluster_poll import (  # noqa: F401 - re-exported
    STREAMS, ClusterPoller, FileState, Snapshot, files_command, parse_files)
from airflow_provider_stepcab.triggers.events import ERROR, FAILED, SUCCESS, TIMEOUT, SlurmJobEvent

#: Slurm states after which the wrapper may never have written its exit file
KILLED = frozenset({"CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"})
REQUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"})
TAIL_LINES = 20


_POLLERS: dict = {}


def get_poller(ssh_conn_id: str) -> ClusterPoller:
    """The poller of ``ssh_conn_id`` in the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    for key in [k for k, p in _POLLERS.items() if p.loop.is_closed()]:
        del _POLLERS[key]
    key = (id(loop), ssh_conn_id)
    poller = _POLLERS.get(key)
    if poller is None or poller.loop is not loop:
        cls = ClusterPoller
        if ssh_conn_id == "local":  # the worker is on the login node (triggers/slurm_local.py)
            from airflow_provider_stepcab.triggers.slurm_local import LocalClusterPoller as cls
        poller = _POLLERS[key] = cls(ssh_conn_id, loop)
    return poller


class SlurmJobTrigger(BaseTrigger):
    """Wait for one Slurm job, streaming its output; fire one :class:`SlurmJobEvent`.

    :param ssh_conn_id: Airflow SSH connection of the cluster.
    :param job_id: the Slurm job id.
    :param job_dir: the wrapper's job directory (``""`` for a foreign job without one: then Slurm's
        state decides, ``COMPLETED`` meaning success).
    :param job_name: the job name (reporting only).
    :param poll_interval: seconds between cluster queries.
    :param stream_logs: log new stdout/stderr lines while the job runs.
    :param log_offsets: bytes of each stream already logged.
    :param exit_grace: seconds to wait for a lagging exit file after Slurm's verdict.
    :param missing_grace: seconds a job may be unknown to both squeue and sacct.
    :param ssh_patience: seconds of SSH failure tolerated.
    :param deadline: epoch seconds after which the job is cancelled (the task's execution_timeout).
    :param cancel_on_kill: ``scancel`` the job when a user kills the task.
    :param log_chunk_size: maximum bytes read per stream per poll.
    """

    def __init__(self, *, ssh_conn_id: str, job_id: str, job_dir: str = "", job_name: str = "",
                 poll_interval: float = 10.0, stream_logs: bool = True, log_offsets: Optional[dict] = None,
                 exit_grace: float = 120.0, missing_grace: float = 120.0, ssh_patience: float = 3600.0,
                 deadline: Optional[float] = None, cancel_on_kill: bool = True,
                 log_chunk_size: int = 65536) -> None:
        super().__init__()
        self.ssh_conn_id, self.job_id, self.job_dir, self.job_name = ssh_conn_id, str(job_id), job_dir, job_name
        self.poll_interval, self.stream_logs = float(poll_interval), bool(stream_logs)
        self.log_offsets = {s: int((log_offsets or {}).get(s, 0)) for s in STREAMS}
        self.exit_grace, self.missing_grace, self.ssh_patience = exit_grace, missing_grace, ssh_patience
        self.deadline, self.cancel_on_kill, self.log_chunk_size = deadline, cancel_on_kill, int(log_chunk_size)
        self._carry = {s: b"" for s in STREAMS}
        self._tail: list = []

    def serialize(self) -> tuple:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "ssh_conn_id": self.ssh_conn_id, "job_id": self.job_id, "job_dir": self.job_dir,
            "job_name": self.job_name, "poll_interval": self.poll_interval, "stream_logs": self.stream_logs,
            "log_offsets": dict(self.log_offsets), "exit_grace": self.exit_grace,
            "missing_grace": self.missing_grace, "ssh_patience": self.ssh_patience, "deadline": self.deadline,
            "cancel_on_kill": self.cancel_on_kill, "log_chunk_size": self.log_chunk_size})

    # ------------------------------------------------------------------ run

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poller = get_poller(self.ssh_conn_id)
        poller.register(self)
        started, seq = time.monotonic(), -1
        verdict_since: Optional[float] = None
        try:
            while True:
                snap = await poller.next_snapshot(seq)
                seq = snap.seq
                if snap.error:
                    down = time.time() - (snap.ssh_down_since or time.time())
                    self.log.warning("%s (for %.0f s; reconnecting)", snap.error, down)
                    if down > self.ssh_patience:
                        yield self._event(ERROR, f"{snap.error}; gave up after {down:.0f} s", None, None)
                        return
                    continue
                fs = snap.files.get(self.job_dir) if self.job_dir else None
                info: Optional[JobInfo] = snap.jobs.get(self.job_id)
                if self.stream_logs and fs is not None:
                    await self._stream(poller, fs, final=False)
                if self.deadline and time.time() > self.deadline:
                    await self._scancel(poller)
                    yield self._event(TIMEOUT, "execution_timeout reached: the job was cancelled", fs, info)
                    return
                now = time.monotonic()
                decision = self.decide(fs, info, waited=now - started,
                                       verdict_for=0.0 if verdict_since is None else now - verdict_since)
                if decision == "wait-verdict":
                    verdict_since = verdict_since or now
                    continue
                verdict_since = None
                if decision is None:
                    continue
                status, message = decision
                if fs is not None:
                    await self._stream(poller, fs, final=True)
                yield self._event(status, message, fs, info)
                return
        except Exception as exc:  # noqa: BLE001 - a trigger must end with an event
            self.log.exception("Slurm trigger failed")
            yield self._event(ERROR, f"trigger error: {type(exc).__name__}: {exc}", None, None)
        finally:
            poller.unregister(self)

    def decide(self, fs: Optional[FileState], info: Optional[JobInfo], *, waited: float,
               verdict_for: float) -> Any:
        """``None`` (keep waiting), ``"wait-verdict"`` (grace running) or ``(status, message)``."""
        exit_code = fs.exit_code if fs is not None else None
        if exit_code == 0:
            return SUCCESS, "exit code 0"
        if exit_code is not None:
            if info is not None and info.active:
                if info.state in REQUEUED:
                    return None                      # requeued: the exit file is from an earlier run
                if verdict_for < min(self.exit_grace, 30.0):
                    return "wait-verdict"            # let Slurm settle (COMPLETING -> final state)
            why = f"exit code {exit_code}"
            if info is not None and info.state != "COMPLETED" and (info.terminal or info.state not in REQUEUED):
                why += f"; {info.explain()}"
            return FAILED, why
        if info is None:
            if waited < self.missing_grace:
                return None
            return FAILED, f"job {self.job_id} is known to neither squeue nor sacct after {waited:.0f} s"
        if info.active:
            return None
        if not self.job_dir:  # a foreign job: Slurm decides
            if info.state == "COMPLETED":
                return SUCCESS, info.explain()
            return FAILED, info.explain()
        grace = self.exit_grace
        if info.state in KILLED:
            grace = min(grace, max(3 * self.poll_interval, 5.0))
            if fs is not None and not fs.started and info.state in ("CANCELLED", "BOOT_FAIL", "DEADLINE"):
                grace = 0.0                          # never started: no exit file will come
        if verdict_for < grace:
            return "wait-verdict"
        return FAILED, f"no exit code was written; {info.explain()}"

    # ------------------------------------------------------------------ logs

    async def _stream(self, poller: ClusterPoller, fs: FileState, *, final: bool) -> None:
        for stream in STREAMS:
            size = fs.sizes.get(stream, -1)
            for _ in range(64 if final else 1):
                if size <= self.log_offsets[stream] and not self._carry[stream]:
                    break
                data = b""
                if size > self.log_offsets[stream]:
                    try:
                        data = await poller.read(f"{self.job_dir}/{stream}.log", self.log_offsets[stream],
                                                 min(self.log_chunk_size, size - self.log_offsets[stream]))
                    except Exception as exc:  # noqa: BLE001 - logs are best effort
                        self.log.debug("reading %s.log: %s", stream, exc)
                        break
                self.log_offsets[stream] += len(data)
                buf = self._carry[stream] + data
                cut = len(buf) if final and size <= self.log_offsets[stream] else buf.rfind(b"\n") + 1
                self._carry[stream] = buf[cut:]
                for line in buf[:cut].decode("utf-8", "replace").splitlines():
                    self.log.info("%s", line.rstrip())
                    self._tail = (self._tail + [line.rstrip()])[-TAIL_LINES:]
                if not data:
                    break

    def _event(self, status: str, message: str, fs: Optional[FileState], info: Optional[JobInfo]) -> TriggerEvent:
        return TriggerEvent(SlurmJobEvent(
            status=status, job_id=self.job_id, job_name=self.job_name, job_dir=self.job_dir,
            exit_code=fs.exit_code if fs is not None else None, slurm_state=info.state if info else None,
            message=message, log_offsets=dict(self.log_offsets), tail=list(self._tail)).to_dict())

    # ------------------------------------------------------------------ kill

    async def _scancel(self, poller: Optional[ClusterPoller] = None) -> None:
        cmd = scancel_command(job_id=self.job_id)
        try:
            if poller is not None:
                await poller.run(cmd)
                return
        except Exception:  # noqa: BLE001 - fall back to a fresh connection
            pass
        if self.ssh_conn_id == "local":
            from airflow_provider_stepcab.runtime.commands import run_command_async

            await run_command_async(cmd, timeout=60)
            return
        from airflow.providers.ssh.hooks.ssh import SSHHookAsync

        await SSHHookAsync(ssh_conn_id=self.ssh_conn_id).run_command(cmd, timeout=60)

    async def on_kill(self) -> None:
        """A user killed, cleared or marked the deferred task: cancel the job."""
        if not self.cancel_on_kill:
            return
        self.log.info("task killed: cancelling Slurm job %s", self.job_id)
        await self._scancel(_POLLERS.get((id(asyncio.get_running_loop()), self.ssh_conn_id)))


__all__ = ["SlurmJobTrigger", "ClusterPoller", "get_poller", "files_command", "parse_files"]
