"""The per-connection cluster poller behind :class:`~.slurm.SlurmJobTrigger` (see :mod:`.slurm`):
one query of the wrappers' files, one ``squeue`` and at most one ``sacct`` per interval for every
registered job, over one SSH connection that reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from airflow_provider_stepcab.hooks.slurm import merge_views, parse_sacct, parse_squeue, sacct_command, squeue_command

STREAMS = ("stdout", "stderr")

if logging.getLogger("asyncssh").level == logging.NOTSET:  # one INFO line per channel otherwise
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def _connection_errors() -> tuple:
    import asyncssh

    return (OSError, asyncssh.Error, asyncio.TimeoutError, TimeoutError, EOFError)


@dataclass
class FileState:
    """What the wrapper wrote in one job directory."""

    exit_code: Optional[int] = None
    started: bool = False
    sizes: dict = field(default_factory=dict)


@dataclass
class Snapshot:
    seq: int = 0
    time: float = 0.0
    jobs: dict = field(default_factory=dict)     # job_id -> JobInfo
    files: dict = field(default_factory=dict)    # job_dir -> FileState
    error: Optional[str] = None
    ssh_down_since: Optional[float] = None


_STATUS_FILES = ("stdout.log", "stderr.log", "started")


def files_command(job_dirs: list) -> str:
    """One shell command reporting every job directory's exit code, ``started`` and log sizes:
    one ``stat`` and one ``grep`` for all of them (a loop per directory forks a few processes per
    job: seconds per cycle with hundreds of waiting jobs)."""
    stats = " ".join(shlex.quote(f"{d}/{name}") for d in job_dirs for name in _STATUS_FILES)
    codes = " ".join(shlex.quote(f"{d}/exitcode") for d in job_dirs)
    return (f"stat --printf='S\\t%s\\t%n\\n' -- {stats} 2>/dev/null; "
            f"grep -H -m1 -s '' -- {codes} | sed 's/^/E\\t/'; true")


def parse_files(text: str, job_dirs: list) -> dict:
    """:func:`files_command`'s output → ``{job_dir: FileState}`` for every one of ``job_dirs``
    (sizes ``-1`` for logs that do not exist yet)."""
    out = {d: FileState(None, False, {"stdout": -1, "stderr": -1}) for d in job_dirs}
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "S":
            size, _, path = rest.partition("\t")
            d, _, name = path.rpartition("/")
            if d in out and size.isdigit():
                if name == "started":
                    out[d].started = True
                elif name in ("stdout.log", "stderr.log"):
                    out[d].sizes[name[:-4]] = int(size)
        elif kind == "E":
            path, sep, value = rest.rpartition("/exitcode:")
            value = value.strip()[:16]
            if sep and path in out and value.lstrip("-").isdigit():
                out[path].exit_code = int(value)
    return out


class ClusterPoller:
    """Polls one cluster for every registered job (see the module docstring).

    :ivar stats: counts of remote queries (``squeue``, ``sacct``, ``files``, ``cycles``) for
        tests and benchmarks.
    """

    def __init__(self, ssh_conn_id: str, loop: asyncio.AbstractEventLoop):
        self.ssh_conn_id, self.loop = ssh_conn_id, loop
        self.watchers: dict = {}          # id(trigger) -> (job_id, job_dir, interval)
        self.snapshot = Snapshot()
        self.stats = {"squeue": 0, "sacct": 0, "files": 0, "cycles": 0, "connects": 0}
        self._cond = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = None
        self._conn: Any = None
        self._sftp: Any = None
        self._failures = 0
        self.command_timeout = 60.0

    # ------------------------------------------------------------------ registration

    def register(self, trigger: "SlurmJobTrigger") -> None:
        self.watchers[id(trigger)] = (str(trigger.job_id), trigger.job_dir, float(trigger.poll_interval))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    def unregister(self, trigger: "SlurmJobTrigger") -> None:
        self.watchers.pop(id(trigger), None)
        if not self.watchers:
            self._wake.set()

    async def next_snapshot(self, after: int) -> Snapshot:
        async with self._cond:
            await self._cond.wait_for(lambda: self.snapshot.seq > after)
            return self.snapshot

    # ------------------------------------------------------------------ connection

    async def connection(self) -> Any:
        if self._conn is None:
            from airflow.providers.ssh.hooks.ssh import SSHHookAsync

            self.stats["connects"] += 1
            self._conn = await asyncio.wait_for(SSHHookAsync(ssh_conn_id=self.ssh_conn_id).get_conn(),
                                                self.command_timeout)
        return self._conn

    async def run(self, command: str) -> tuple:
        conn = await self.connection()
        result = await conn.run(command, timeout=self.command_timeout, check=False)
        return result.exit_status or 0, str(result.stdout or ""), str(result.stderr or "")

    async def read(self, path: str, offset: int, size: int) -> bytes:
        """``size`` bytes of ``path`` from ``offset`` over the shared SFTP session."""
        if self._sftp is None:
            self._sftp = await (await self.connection()).start_sftp_client()
        async with self._sftp.open(path, "rb") as fh:
            await fh.seek(offset)
            return await fh.read(size)

    def _drop_connection(self) -> None:
        for obj in (self._sftp, self._conn):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001 - best effort teardown
                pass
        self._sftp = self._conn = None

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        try:
            while self.watchers:
                self._wake.clear()
                snap = await self._poll()
                async with self._cond:
                    self.snapshot = snap
                    self._cond.notify_all()
                interval = min(w[2] for w in self.watchers.values()) if self.watchers else 0
                if snap.error:
                    interval = max(interval, min(2 ** (self._failures - 1), 30) * (1 + random.random()))
                try:
                    await asyncio.wait_for(self._wake.wait(), interval)
                    await asyncio.sleep(0.05)  # let other triggers registering now join this cycle
                except asyncio.TimeoutError:
                    pass
        finally:
            self._drop_connection()

    async def _poll(self) -> Snapshot:
        prev = self.snapshot
        watch = list(self.watchers.values())
        ids = sorted({w[0] for w in watch if w[0]})
        dirs = sorted({w[1] for w in watch if w[1]})
        self.stats["cycles"] += 1
        try:
            files: dict = {}
            if dirs:
                self.stats["files"] += 1
                _, out, _ = await self.run(files_command(dirs))
                files = parse_files(out, dirs)
            self.stats["squeue"] += 1
            _, q, _ = await self.run(squeue_command(ids))
            live = parse_squeue(q)
            acct: dict = {}
            missing = [i for i in ids if i not in live or not live[i].active]
            if missing:
                self.stats["sacct"] += 1
                rc, a, _ = await self.run(sacct_command(missing))
                acct = parse_sacct(a) if rc == 0 else {}
        except _connection_errors() as exc:
            self._failures += 1
            self._drop_connection()
            return Snapshot(prev.seq + 1, time.time(), prev.jobs, prev.files,
                            f"SSH to {self.ssh_conn_id} failed: {type(exc).__name__}: {exc}",
                            prev.ssh_down_since or time.time())
        self._failures = 0
        return Snapshot(prev.seq + 1, time.time(), merge_views(live, acct), files)
