"""Slurm on *this* machine: the Airflow worker runs on the cluster's login node (no SSH).

``backend.slurm.ssh_conn_id: local`` selects it (docs/hpc-site.md). :class:`LocalSlurmHook` is
:class:`~.slurm.SlurmHook` with the SSH command channel replaced by a local ``bash -c`` and SFTP by
plain file access; everything else (command texts, parsers, job names, reattaching) is shared.

:class:`SharedJobPoll` batches the status queries of every worker process of one user on this
machine: the processes share a small state file under a lock, and whichever finds it older than
the poll interval runs the one ``squeue`` (and, for jobs it no longer lists, the one ``sacct``)
for *all* jobs any of them waits for. A login node with 200 waiting tasks sees one query per
interval, as with the SSH path's per-cluster poller.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import Any, Callable, Iterable, Optional

from airflow_provider_stepcab.hooks.slurm import (
    JobInfo, SlurmError, SlurmHook, merge_views, parse_sacct, parse_squeue, sacct_command, squeue_command)
from airflow_provider_stepcab.plan.slurm import LOCAL
from airflow_provider_stepcab.runtime.commands import run_command

#: a job not asked about for this long is dropped from the shared poll
WANTED_TTL = 600.0


def is_local(conn_id: Optional[str]) -> bool:
    return conn_id == LOCAL


class LocalSlurmHook(SlurmHook):
    """:class:`~.slurm.SlurmHook` for a worker on the login node: local commands and files."""

    def __init__(self, ssh_conn_id: str = LOCAL, *, command_timeout: float = 60.0, **_: Any) -> None:
        super().__init__(LOCAL, command_timeout=command_timeout)

    def close(self) -> None:
        """Nothing to close."""

    def run(self, command: str, *, check: bool = True, timeout: Optional[float] = None) -> tuple:
        """Run ``command`` here → ``(exit_status, stdout, stderr)``."""
        rc, out, err = run_command(command, timeout=timeout or self.command_timeout)
        if check and rc != 0:
            raise SlurmError(f"command failed (exit {rc}): {command}\n{err.strip()}")
        return rc, out, err

    def home(self) -> str:
        return os.path.expanduser("~")

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def open_binary(self, path: str) -> Any:
        return open(path, "rb")

    def missing(self, paths: Iterable[str]) -> list:
        """The paths that do not exist on this (login) node."""
        return [p for p in paths if not os.path.exists(p)]


def make_slurm_hook(conn_id: str, **kwargs: Any) -> SlurmHook:
    """The hook for ``backend.slurm.ssh_conn_id``: local for ``local``, else over SSH."""
    return LocalSlurmHook(**kwargs) if is_local(conn_id) else SlurmHook(conn_id, **kwargs)


def default_state_dir() -> str:
    """Per user and cluster config: ``$STEPCAB_SLURM_POLL_DIR`` or ``~/.cache/stepcab/slurm-poll``."""
    base = os.environ.get("STEPCAB_SLURM_POLL_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "stepcab",
                                                                    "slurm-poll")
    conf = os.environ.get("SLURM_CONF", "default").strip("/").replace("/", "_") or "default"
    return os.path.join(base, conf)


def _encode(info: JobInfo) -> list:
    return [info.name, info.state, info.reason, info.exit_code, info.source]


def _decode(job_id: str, row: list) -> JobInfo:
    return JobInfo(job_id, row[0], row[1], row[2], row[3], row[4])


class SharedJobPoll:
    """One status query per interval for all local waiters of this user (see the module doc).

    :param state_dir: where the lock and state files live (:func:`default_state_dir`).
    :param runner: ``command -> (rc, out, err)`` (local ``bash -c``; tests may count calls).
    """

    def __init__(self, state_dir: Optional[str] = None, runner: Optional[Callable[[str], tuple]] = None) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.runner = runner or (lambda cmd: run_command(cmd, timeout=60.0))

    @property
    def path(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (FileNotFoundError, ValueError):
            state = {}
        state.setdefault("time", 0.0)
        state.setdefault("wanted", {})
        state.setdefault("jobs", {})
        state.setdefault("stats", {"squeue": 0, "sacct": 0, "cycles": 0})
        return state

    def _save(self, state: dict) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, self.path)

    def stats(self) -> dict:
        """Queries run so far (``squeue``, ``sacct``, ``cycles``) by every process sharing the state."""
        return dict(self._load()["stats"])

    def poll(self, job_ids: Iterable[str], interval: float) -> dict:
        """``{job_id: JobInfo}`` for ``job_ids``, at most ``interval`` seconds old.

        :raises SlurmError: ``squeue`` failed (the caller retries next cycle).
        """
        ids = sorted({str(j) for j in job_ids if j})
        os.makedirs(self.state_dir, exist_ok=True)
        with open(os.path.join(self.state_dir, "lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._load()
            now = time.time()
            for job_id in ids:
                state["wanted"][job_id] = now
            state["wanted"] = {j: t for j, t in state["wanted"].items() if now - t < WANTED_TTL}
            fresh = now - state["time"] < interval  # spaced >= interval: one query per interval for all
            if not fresh:
                state["jobs"] = self._query(sorted(state["wanted"]), state["stats"])
                state["time"] = now
            self._save(state)
        return {j: _decode(j, state["jobs"][j]) for j in ids if j in state["jobs"]}

    def _query(self, ids: list, stats: dict) -> dict:
        stats["cycles"] += 1
        if not ids:
            return {}
        stats["squeue"] += 1
        rc, q, err = self.runner(squeue_command(ids))
        if rc != 0 and ("contact" in err or "timed out" in err.lower()):  # unknown ids are not an error
            raise SlurmError(f"squeue failed (exit {rc}): {err.strip()}")
        live = parse_squeue(q)
        acct: dict = {}
        missing = [i for i in ids if i not in live or not live[i].active]
        if missing:
            stats["sacct"] += 1
            rc, a, _ = self.runner(sacct_command(missing))
            acct = parse_sacct(a) if rc == 0 else {}
        return {j: _encode(info) for j, info in merge_views(live, acct).items()}


__all__ = ["LocalSlurmHook", "SharedJobPoll", "make_slurm_hook", "is_local", "default_state_dir"]
