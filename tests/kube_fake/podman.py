"""Run one pod container for real with the local podman (see ``infra-facts.md``).

podman 4.3.1 from Debian runs here as root only with ``--runtime runc``, explicit ulimits,
``--root/--runroot`` on the command line and ``--network none``. Each container runs attached
(``podman run``), so its stdout/stderr lines arrive as they are written and are stamped with
an RFC3339 time on arrival, like the kubelet's log files.

Memory limits go on a per-pod cgroup (v1 hierarchy ``memory:/stepcabfake/<pod uid>``, the
kubelet's "pod cgroup") passed as ``--cgroup-parent``; OOM kills are recognised from the
kernel log (``oom_memcg=/stepcabfake/<uid>``, whatever podman's exit code: it may exit with its own
clean-up error when the container was killed) or, for a SIGKILL exit, the cgroup's
``memory.failcnt``, because podman 4.3.1 reports ``OOMKilled: false`` on this kernel.

conmon double-forks: its zombies would land on PID 1, which reaps nothing here, so the
process becomes a child subreaper while containers run and reaps exited ``conmon`` children
(never its own direct children, whose exit codes ``subprocess`` needs).
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = os.environ.get("STEPCAB_KUBE_FAKE_PODMAN_ROOT", "/var/tmp/stepcab-kube-fake/root")
RUNROOT = os.environ.get("STEPCAB_KUBE_FAKE_PODMAN_RUNROOT", "/var/tmp/stepcab-kube-fake/runroot")
IMAGE = "localhost/stepcab-test:latest"
CGROUP_BASE = Path("/sys/fs/cgroup/memory/stepcabfake")
_PR_SET_CHILD_SUBREAPER = 36


def now_rfc3339() -> str:
    """UTC now as RFC3339 with nanosecond digits (the kubelet's log timestamp format)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def podman_base(root: str = ROOT, runroot: str = RUNROOT) -> list:
    return ["podman", "--root", root, "--runroot", runroot, "--runtime", "runc",
            "--cgroup-manager", "cgroupfs", "--events-backend", "none"]


def available() -> Optional[str]:
    """``None`` when podman can run containers here, else why not."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman/runc not installed (scripts/kube-fake-image.sh installs them)"
    if os.geteuid() != 0:
        return "podman works here as root only"
    return None


def image_exists(image: str, base: Sequence[str]) -> bool:
    return subprocess.run([*base, "image", "exists", image], capture_output=True).returncode == 0


class Reaper:
    """Subreaper for conmon's orphans while containers run (reference counted)."""

    _lock = threading.Lock()
    _users = 0

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            cls._users += 1
            if cls._users == 1:
                _prctl_subreaper(1)

    @classmethod
    def release(cls) -> None:
        """One container ended: reap its conmon (which exits just after it) for a few seconds, then
        stop being a subreaper when no container runs any more."""
        def later() -> None:
            for _ in range(20):
                cls.reap()
                time.sleep(0.2)
            with cls._lock:
                cls._users = max(0, cls._users - 1)
                if cls._users == 0:
                    _prctl_subreaper(0)
                    cls.reap()

        threading.Thread(target=later, name="conmon-reaper", daemon=True).start()

    @staticmethod
    def reap() -> None:
        """Reap zombie ``conmon`` children of this process."""
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if comm == "conmon" and fields[0] == "Z" and int(fields[1]) == me:
                try:
                    os.waitpid(int(entry.name), os.WNOHANG)
                except ChildProcessError:
                    pass


def _prctl_subreaper(flag: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, flag, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


class ContainerRun:
    """One container process: start, stream lines, wait, kill, classify the exit.

    :param name: podman container name (unique).
    :param cgroup: the pod cgroup name under :data:`CGROUP_BASE` (memory limit lives there).
    :param on_line: receives ``(timestamp, text)`` per output line (stdout and stderr).
    """

    def __init__(self, *, name: str, image: str, command: Sequence[str], args: Sequence[str], env: dict,
                 workdir: Optional[str], user: Optional[str], binds: Sequence[tuple], memory_limit: Optional[int],
                 cpus: Optional[float], cgroup: str, on_line: Callable[[str, str], None],
                 base: Sequence[str]):
        self.name, self.cgroup, self.on_line, self.base = name, cgroup, on_line, list(base)
        self.memory_limit = memory_limit
        argv = [*self.base, "run", "--rm", "--name", name, "--network", "none", "--ulimit", "nofile=1024:1024",
                "--ulimit", "nproc=4096:4096", "--cgroup-parent", f"/stepcabfake/{cgroup}"]
        if cpus:
            argv += ["--cpus", f"{cpus:g}"]
        if user:
            argv += ["--user", user]
        if workdir:
            argv += ["--workdir", workdir]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        for host, target, ro in binds:
            argv += ["--volume", f"{host}:{target}:{'ro' if ro else 'rw'}"]
        if command:
            argv += ["--entrypoint", json.dumps(list(command))]
        argv += [image, *args]
        self.argv = argv
        self.proc: Optional[subprocess.Popen] = None
        self.started_at: Optional[str] = None
        self.finished_at: Optional[str] = None
        self.exit_code: Optional[int] = None
        self.reason: Optional[str] = None
        self.message: Optional[str] = None
        self._stderr_tail: list = []

    def start(self) -> None:
        cg = CGROUP_BASE / self.cgroup
        cg.mkdir(parents=True, exist_ok=True)
        if self.memory_limit:
            for knob in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                try:
                    (cg / knob).write_text(str(self.memory_limit))
                except OSError:
                    pass
        Reaper.acquire()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.started_at = now_rfc3339()
        self._readers = [threading.Thread(target=self._read, args=(s, s is self.proc.stderr), daemon=True)
                         for s in (self.proc.stdout, self.proc.stderr)]
        for t in self._readers:
            t.start()

    def _read(self, stream, is_err: bool) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            if is_err:
                self._stderr_tail = (self._stderr_tail + [text])[-5:]
            self.on_line(now_rfc3339(), text)
        stream.close()

    def wait(self) -> int:
        assert self.proc is not None
        code = self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        self.finished_at = now_rfc3339()
        Reaper.release()
        if code == 0:
            self.reason = "Completed"
        elif self.memory_limit and (self._kernel_killed() or (code == 137 and self._hit_limit())):
            # the kernel killed the container for memory: the kubelet reads that from the cgroup too,
            # whatever the runtime says (podman may exit with its own clean-up error, e.g. 127 with
            # "container state improper", when the process it waits for was OOM-killed)
            self.reason, code = "OOMKilled", 137
        elif code in (125, 126, 127) and any(line.startswith("Error:") for line in self._stderr_tail):
            self.reason, self.message = "StartError", "\n".join(self._stderr_tail)
        else:
            self.reason = "Error"
        self.exit_code = code
        self._cleanup_cgroup()
        return code

    def _kernel_killed(self) -> bool:
        """The kernel log names this pod's cgroup in an OOM kill."""
        try:
            out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
            return f"oom_memcg=/stepcabfake/{self.cgroup}" in out
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _hit_limit(self) -> bool:
        """The pod's cgroup hit its memory limit (with a SIGKILL exit: the OOM killer's work)."""
        try:
            return int((CGROUP_BASE / self.cgroup / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError):
            return False

    def _cleanup_cgroup(self) -> None:
        """Remove the pod cgroup (and the dirs podman made) in every v1 controller."""
        for _ in range(10):
            left = [d for d in CGROUP_BASE.parent.parent.glob(f"*/stepcabfake/{self.cgroup}") if d.is_dir()]
            for cg in left:
                for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    try:
                        sub.rmdir()
                    except OSError:
                        pass
                try:
                    cg.rmdir()
                except OSError:
                    pass
            if not any(d.exists() for d in left):
                return
            Reaper.reap()
            time.sleep(0.1)

    def kill(self, grace: float) -> None:
        """SIGTERM the container, SIGKILL after ``grace`` seconds (``podman stop``)."""
        subprocess.run([*self.base, "stop", "--time", str(int(max(grace, 0))), self.name],
                       capture_output=True, timeout=grace + 30)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
