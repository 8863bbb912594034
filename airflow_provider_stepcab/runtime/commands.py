"""Run short shell commands on this machine (``sbatch``, ``squeue``, ``sacct``, ``scancel``).

Used when the Airflow worker runs on the cluster's login node (``backend.slurm.ssh_conn_id:
local``, docs/hpc-site.md): the same command text the SSH path sends to the login node runs
here through ``bash -c``, in its own process group, killed as a group on timeout. No Airflow here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Optional


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_command(command: str, *, timeout: Optional[float] = 60.0) -> tuple:
    """``bash -c command`` → ``(exit_status, stdout, stderr)`` as text; exit 124 on timeout."""
    proc = subprocess.Popen(["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        return 124, out.decode("utf-8", "replace"), err.decode("utf-8", "replace") + f"\ntimed out after {timeout} s"
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def run_command_async(command: str, *, timeout: Optional[float] = 60.0) -> tuple:
    """:func:`run_command` for an event loop (a trigger)."""
    proc = await asyncio.create_subprocess_exec("bash", "-c", command, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc.pid)
        out, err = await proc.communicate()
        return 124, out.decode("utf-8", "replace"), err.decode("utf-8", "replace") + f"\ntimed out after {timeout} s"
    return proc.returncode or 0, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


__all__ = ["run_command", "run_command_async"]
