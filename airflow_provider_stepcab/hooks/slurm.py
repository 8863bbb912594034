"""Talk to a Slurm cluster over SSH, composing the ssh and sftp providers' hooks.

:class:`SlurmHook` (synchronous, for workers): upload a batch script over SFTP, ``sbatch
--parsable``, find jobs by their deterministic names (``squeue`` + ``sacct``), ``scancel``, read
remote files from a byte offset, remove a job directory. The command builders and output parsers
below are shared with the asynchronous trigger (:mod:`..triggers.slurm`), which runs the same
commands over ``SSHHookAsync``/asyncssh.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from airflow.sdk import BaseHook

#: Slurm states of a job that is still (or again) in the system
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                           "RESV_DEL_HOLD", "SPECIAL_EXIT", "POWER_UP_NODE", "UPDATE_DB"})
#: terminal states and how to explain them in an error
TERMINAL_STATES = {
    "COMPLETED": "completed",
    "FAILED": "the batch script failed",
    "TIMEOUT": "the job reached its time limit (TIMEOUT)",
    "OUT_OF_MEMORY": "the job ran out of memory (OUT_OF_MEMORY)",
    "NODE_FAIL": "a node of the job failed (NODE_FAIL)",
    "PREEMPTED": "the job was preempted (PREEMPTED)",
    "CANCELLED": "the job was cancelled (CANCELLED)",
    "BOOT_FAIL": "the job's node failed to boot (BOOT_FAIL)",
    "DEADLINE": "the job missed its deadline (DEADLINE)",
    "REVOKED": "the job was revoked by a federated sibling (REVOKED)",
}
SQUEUE_FORMAT = "%i|%j|%T|%r"
SACCT_FORMAT = "JobIDRaw,JobName,State,ExitCode,Reason"


@dataclass(frozen=True)
class JobInfo:
    """One job as Slurm reports it.

    :param state: the base state (``CANCELLED by 1000`` → ``CANCELLED``).
    :param exit_code: ``sacct``'s ``ExitCode`` (``"rc:signal"``) or ``None`` from squeue.
    :param source: ``"squeue"`` or ``"sacct"``.
    """

    job_id: str
    name: str
    state: str
    reason: str = ""
    exit_code: Optional[str] = None
    source: str = "squeue"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def explain(self) -> str:
        """``TIMEOUT: the job reached its time limit ...`` style text for errors."""
        text = TERMINAL_STATES.get(self.state, self.state)
        extra = []
        if self.exit_code and self.exit_code != "0:0":
            extra.append(f"Slurm exit code {self.exit_code}")
        if self.reason and self.reason not in ("None", "(null)"):
            extra.append(f"reason {self.reason}")
        return f"Slurm state {self.state}: {text}" + (f" ({', '.join(extra)})" if extra else "")


def _base_state(text: str) -> str:
    return (text.split() or [""])[0].rstrip("+").upper()


def squeue_command(job_ids: Iterable[str] = (), names: Iterable[str] = ()) -> str:
    """One ``squeue`` for many jobs (by id or by name); unknown ids are not an error."""
    cmd = ["squeue", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}"]
    ids, names = sorted(set(map(str, job_ids))), sorted(set(names))
    if ids:
        cmd.append("--jobs=" + ",".join(ids))
    if names:
        cmd.append("--name=" + ",".join(names))
    return " ".join(shlex.quote(c) for c in cmd)


def sacct_command(job_ids: Iterable[str] = (), names: Iterable[str] = (), since: str = "now-7days") -> str:
    """One ``sacct`` (allocations only) for many jobs (by id or by name)."""
    cmd = ["sacct", "--noheader", "--parsable2", "--allocations", f"--format={SACCT_FORMAT}"]
    ids, names = sorted(set(map(str, job_ids))), sorted(set(names))
    if ids:
        cmd.append("--jobs=" + ",".join(ids))
    if names:
        cmd += ["--name=" + ",".join(names), f"--starttime={since}"]
    return " ".join(shlex.quote(c) for c in cmd)


def submit_command(script_path: str) -> str:
    """``sbatch --parsable <script>`` (the job id on stdout)."""
    return f"sbatch --parsable {shlex.quote(script_path)}"


def scancel_command(*, job_id: Optional[str] = None, name: Optional[str] = None) -> str:
    """``scancel`` of a job by id, or of every job of a name that belongs to the connection's user."""
    if job_id:
        return f"scancel {shlex.quote(str(job_id))}"
    if name:
        return f"scancel --user=\"$(id -un)\" --name={shlex.quote(name)}"
    raise ValueError("scancel needs a job id or a name")


def remove_dir_command(path: str) -> str:
    """``rm -rf -- <path>``: a job directory (refuses relative paths and paths fewer than 3 deep)."""
    if not posixpath.isabs(path) or path.rstrip("/").count("/") < 3:
        raise ValueError(f"refusing to remove {path!r}")
    return f"rm -rf -- {shlex.quote(path)}"


def parse_squeue(text: str) -> dict:
    """``squeue`` output → ``{job_id: JobInfo}``."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            jobs[parts[0]] = JobInfo(parts[0], parts[1], _base_state(parts[2]),
                                     parts[3] if len(parts) > 3 else "", None, "squeue")
    return jobs


def parse_sacct(text: str) -> dict:
    """``sacct --parsable2`` output → ``{job_id: JobInfo}`` (the last record of a requeued job wins)."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4 and parts[0] and "." not in parts[0]:
            jobs[parts[0]] = JobInfo(parts[0], parts[1], _base_state(parts[2]),
                                     parts[4] if len(parts) > 4 else "", parts[3], "sacct")
    return jobs


def merge_views(squeue: dict, sacct: dict) -> dict:
    """squeue answers for jobs it still lists; sacct for the others (and adds exit codes)."""
    out = dict(sacct)
    for job_id, info in squeue.items():
        acct = sacct.get(job_id)
        out[job_id] = info if acct is None or info.active else acct
    return out


def parse_sbatch(text: str) -> str:
    """``sbatch --parsable`` prints ``jobid[;cluster]``."""
    first = (text.strip().splitlines() or [""])[0].strip()
    job_id = first.split(";")[0]
    if not job_id.isdigit():
        raise ValueError(f"unexpected sbatch output: {text.strip()!r}")
    return job_id


class SlurmError(RuntimeError):
    """A Slurm command failed (the message carries its stderr)."""


class SlurmHook(BaseHook):
    """Synchronous Slurm access over one SSH connection plus one SFTP session.

    :param ssh_conn_id: Airflow SSH connection of the cluster's login node.
    :param command_timeout: seconds each remote command may take.
    :param conn_retry_attempts: connection attempts (sshd may refuse under load).
    """

    def __init__(self, ssh_conn_id: str = "ssh_default", *, command_timeout: float = 60.0,
                 conn_retry_attempts: int = 5) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.command_timeout = command_timeout
        self.conn_retry_attempts = conn_retry_attempts
        self._ssh = None
        self._sftp = None

    @property
    def ssh_hook(self):
        if self._ssh is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            self._ssh = SSHHook(ssh_conn_id=self.ssh_conn_id, conn_retry_attempts=self.conn_retry_attempts,
                                cmd_timeout=self.command_timeout)
        return self._ssh

    @property
    def sftp_hook(self):
        if self._sftp is None:
            from airflow.providers.sftp.hooks.sftp import SFTPHook

            self._sftp = SFTPHook(ssh_conn_id=self.ssh_conn_id, use_managed_conn=False)
        return self._sftp

    def close(self) -> None:
        """Close the SSH and SFTP connections."""
        if self._sftp is not None:
            self._sftp.close_conn()
        if self._ssh is not None and self._ssh.client is not None:
            self._ssh.client.close()
            self._ssh.client = None

    # ------------------------------------------------------------------ commands

    def run(self, command: str, *, check: bool = True, timeout: Optional[float] = None) -> tuple:
        """Run ``command`` on the login node → ``(exit_status, stdout, stderr)`` as text."""
        hook = self.ssh_hook
        rc, out, err = hook.exec_ssh_client_command(hook.get_conn(), command, get_pty=False, environment=None,
                                                    timeout=timeout or self.command_timeout)
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if check and rc != 0:
            raise SlurmError(f"remote command failed (exit {rc}): {command}\n{err.strip()}")
        return rc, out, err

    def home(self) -> str:
        """The remote user's home directory (for relative ``remote_dir``)."""
        return self.sftp_hook.get_conn().normalize(".")

    def absolute(self, path: str) -> str:
        return path if posixpath.isabs(path) else posixpath.join(self.home(), path)

    def submit(self, script_path: str) -> str:
        """``sbatch --parsable <script>`` → the job id."""
        _, out, _ = self.run(submit_command(script_path))
        return parse_sbatch(out)

    def jobs(self, *, job_ids: Iterable[str] = (), names: Iterable[str] = ()) -> dict:
        """Jobs by id and/or name, from squeue (live) and sacct (history) → ``{job_id: JobInfo}``."""
        job_ids, names = list(job_ids), list(names)
        if not job_ids and not names:
            return {}
        _, q, _ = self.run(squeue_command(job_ids, names), check=False)
        rc, a, err = self.run(sacct_command(job_ids, names), check=False)
        if rc != 0:
            self.log.warning("sacct failed (exit %s): %s; using squeue only", rc, err.strip())
            a = ""
        return merge_views(parse_squeue(q), parse_sacct(a))

    def cancel(self, *, job_id: Optional[str] = None, name: Optional[str] = None) -> None:
        """``scancel`` a job by id, or every job of a name (of the connection's user)."""
        if job_id or name:
            self.run(scancel_command(job_id=job_id, name=name), check=False)

    # ------------------------------------------------------------------ files

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create parent directories and write ``path`` over SFTP (atomic: tmp + rename)."""
        sftp = self.sftp_hook
        parent = posixpath.dirname(path)
        if parent:
            sftp.create_directory(parent)
        client = sftp.get_conn()
        tmp = f"{path}.tmp"
        with client.open(tmp, "w") as fh:
            fh.write(text.encode())
        client.chmod(tmp, mode)
        client.posix_rename(tmp, path)

    def open_binary(self, path: str) -> Any:
        """``path`` opened for binary reading (over SFTP here; locally in :mod:`.slurm_local`);
        raises ``FileNotFoundError`` when it does not exist."""
        return self.sftp_hook.get_conn().open(path, "rb")

    def read_from(self, path: str, offset: int = 0, max_bytes: int = 1 << 20) -> tuple:
        """Read up to ``max_bytes`` of ``path`` from ``offset`` → ``(bytes, new_offset)``;
        a missing file gives ``(b"", offset)``."""
        try:
            with self.open_binary(path) as fh:
                fh.seek(offset)
                data = fh.read(max_bytes)
        except FileNotFoundError:
            return b"", offset
        return data, offset + len(data)

    def read_text(self, path: str, max_bytes: int = 1 << 20) -> Optional[str]:
        """The whole file (capped) as text, ``None`` when it does not exist."""
        try:
            with self.open_binary(path) as fh:
                return fh.read(max_bytes).decode("utf-8", "replace")
        except FileNotFoundError:
            return None

    def missing(self, paths: Iterable[str]) -> list:
        """The paths of ``paths`` that do not exist on the cluster (SFTP ``stat``)."""
        client = self.sftp_hook.get_conn()
        out = []
        for path in paths:
            try:
                client.stat(path)
            except FileNotFoundError:
                out.append(path)
            except OSError:
                out.append(path)
        return out

    def remove_dir(self, path: str) -> None:
        """``rm -rf`` a job directory (refuses short or relative paths)."""
        self.run(remove_dir_command(path), check=False)


__all__ = ["SlurmHook", "JobInfo", "SlurmError", "ACTIVE_STATES", "TERMINAL_STATES", "squeue_command",
           "sacct_command", "submit_command", "scancel_command", "remove_dir_command", "parse_squeue", "parse_sacct", "parse_sbatch", "merge_views"]
