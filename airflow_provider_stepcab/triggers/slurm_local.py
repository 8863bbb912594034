"""The Slurm wait of :mod:`.slurm` for a worker on the login node (``ssh_conn_id: local``).

:class:`LocalClusterPoller` is the per-event-loop :class:`~.slurm.ClusterPoller` with local
commands and files: the wrapper's files are read directly, and the job states come from
:class:`~..hooks.slurm_local.SharedJobPoll`, which batches the queries of every process of this
user on this machine (one ``squeue`` + at most one ``sacct`` per interval, however many tasks wait).

:func:`wait_here` runs a :class:`~.slurm.SlurmJobTrigger` to its event inside the worker: an
Edge worker on the login node cannot hand the wait to a triggerer that runs elsewhere (the
triggerer would run ``squeue`` on its own host), so the task waits where it submitted.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Optional

from airflow_provider_stepcab.hooks.slurm import SlurmError
from airflow_provider_stepcab.hooks.slurm_local import SharedJobPoll
from airflow_provider_stepcab.runtime.commands import run_command_async
from airflow_provider_stepcab.triggers.cluster_poll import STREAMS, ClusterPoller, FileState, Snapshot


def file_state(job_dir: str) -> FileState:
    """What the wrapper wrote in ``job_dir`` (exit code, ``started``, log sizes), read directly."""
    code = None
    try:
        with open(os.path.join(job_dir, "exitcode"), encoding="utf-8") as fh:
            text = fh.read(16).strip()
        code = int(text) if text.lstrip("-").isdigit() else None
    except OSError:
        pass
    sizes = {}
    for stream in STREAMS:
        try:
            sizes[stream] = os.stat(os.path.join(job_dir, f"{stream}.log")).st_size
        except OSError:
            sizes[stream] = -1
    return FileState(code, os.path.exists(os.path.join(job_dir, "started")), sizes)


class LocalClusterPoller(ClusterPoller):
    """:class:`~.slurm.ClusterPoller` without SSH (see the module docstring)."""

    def __init__(self, ssh_conn_id: str, loop: asyncio.AbstractEventLoop, shared: Optional[SharedJobPoll] = None):
        super().__init__(ssh_conn_id, loop)
        self.shared = shared or SharedJobPoll()

    async def run(self, command: str) -> tuple:
        return await run_command_async(command, timeout=self.command_timeout)

    async def read(self, path: str, offset: int, size: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def _drop_connection(self) -> None:
        """No connection to drop."""

    async def _poll(self) -> Snapshot:
        prev = self.snapshot
        watch = list(self.watchers.values())
        ids = sorted({w[0] for w in watch if w[0]})
        dirs = sorted({w[1] for w in watch if w[1]})
        interval = min((w[2] for w in watch), default=10.0)
        self.stats["cycles"] += 1
        files = {d: file_state(d) for d in dirs}
        try:
            jobs = await asyncio.to_thread(self.shared.poll, ids, interval)
        except (SlurmError, OSError) as exc:
            self._failures += 1
            return Snapshot(prev.seq + 1, time.time(), prev.jobs, files, f"local Slurm query failed: {exc}",
                            prev.ssh_down_since or time.time())
        self._failures = 0
        return Snapshot(prev.seq + 1, time.time(), jobs, files)


def wait_here(trigger: Any) -> dict:
    """Run ``trigger`` (a local :class:`~.slurm.SlurmJobTrigger`) in this process → its event payload."""
    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise RuntimeError("the Slurm wait ended without an event")

    return asyncio.run(first())


__all__ = ["LocalClusterPoller", "file_state", "wait_here"]
