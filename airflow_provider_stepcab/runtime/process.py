"""Run a command in its own process group and stream its output line by line.

:func:`run_streaming` starts the argv with ``start_new_session=True`` (so the
child leads a new process group), reads stdout and stderr in two threads and
hands every line to ``on_line(stream, text)`` on the *calling* thread, in the
order the lines arrived (order within one stream is always preserved). Bytes
are decoded as UTF-8 with ``errors="replace"``; the line ending is removed; a
final line without a newline is delivered too.

With ``stdout_tty=True`` the child's stdout is a pseudo-terminal (output post-processing off, so
the bytes are the program's own) and stderr stays a pipe: programs that change behaviour when
stdout is not a terminal (tricolour's dask ``ProgressBar(dt=300)`` sleeps five minutes before
exiting) act as they would in a shell.

The whole group is killed (SIGTERM, then SIGKILL after a grace period) on
timeout or when :meth:`ProcessHandle.kill` is called, e.g. from Airflow's
``on_kill`` in another thread. No Airflow import here.
"""

from __future__ import annotations

import errno
import os
import pty
import queue
import shutil
import signal
import subprocess
import sys
import threading
import termios
import time
from typing import Callable, Mapping, Optional, Sequence

#: Longest chunk delivered as one line; longer lines are split.
MAX_LINE_BYTES = 1 << 20

_EOF = object()


class ExecutableNotFound(FileNotFoundError):
    """The program to run does not exist or is not executable."""

    def __init__(self, executable: str, reason: str = "not found"):
        self.executable = executable
        super().__init__(f"cannot run '{executable}': {reason}")


class ProcessTimeout(TimeoutError):
    """The process ran longer than its timeout and its process group was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, returncode: Optional[int]):
        self.argv, self.timeout, self.returncode = list(argv), timeout, returncode
        super().__init__(f"'{argv[0]}' timed out after {timeout:g}s (process group killed)")


class _UsagePopen(subprocess.Popen):
    """``Popen`` reaping its child with ``os.wait4``, keeping the ``rusage`` of the leader and the
    descendants it waited for (``rusage``; CPython 3.11's two reaping paths, ``poll`` and ``wait``)."""

    rusage = None

    def _waitpid_usage(self, pid: int, flags: int) -> tuple:
        got, status, usage = os.wait4(pid, flags)
        if got == self.pid:
            self.rusage = usage
        return got, status

    def _internal_poll(self, _deadstate=None, **_kw):  # noqa: ANN001 - CPython's signature
        return super()._internal_poll(_deadstate=_deadstate, _waitpid=self._waitpid_usage)

    def _try_wait(self, wait_flags):  # noqa: ANN001 - CPython's signature
        try:
            return self._waitpid_usage(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0


#: The leader of a measured run (:func:`spawn` with ``measure``): a small interpreter that forks the
#: command, waits for it and writes the command's ``rusage`` (``utime stime maxrss_kib``) to fd
#: ``argv[1]``. Linux counts the memory of the process image ``exec`` replaced in ``ru_maxrss``: a
#: command forked straight from a worker (hundreds of MiB) would report at least the worker's own
#: resident size. Forked from this small leader, the command's figures are its own.
MEASURE_LEADER = r"""
import os, signal, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
for s in STOP:
    signal.signal(s, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.close(fd)
    for s in STOP + (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, ("cannot run %r: %s\n" % (argv[0], exc.strerror)).encode())
    os._exit(127)
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        pass
os.write(fd, ("%r %r %d\n" % (ru.ru_utime, ru.ru_stime, ru.ru_maxrss)).encode())
if os.WIFSIGNALED(status):
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    if os.WTERMSIG(status) != signal.SIGKILL:
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(128 + os.WTERMSIG(status))
os._exit(os.WEXITSTATUS(status))
"""


class CommandUsage:
    """The measured command's ``rusage`` figures (the fields :func:`.accounting.rusage_record` reads)."""

    def __init__(self, ru_utime: float, ru_stime: float, ru_maxrss: int):
        self.ru_utime, self.ru_stime, self.ru_maxrss = ru_utime, ru_stime, ru_maxrss


class ProcessHandle:
    """A running process group: ``pid`` (the leader) = ``pgid``.

    :meth:`kill` is thread-safe and may be called at any time, also after the
    process exited (then it only reaps any stragglers left in the group).
    """

    def __init__(self, popen: subprocess.Popen, kill_grace: float = 5.0, usage_fd: Optional[int] = None):
        self.popen = popen
        self._usage_fd = usage_fd
        self._usage: Optional[CommandUsage] = None
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session makes the child a group leader
        self.kill_grace = kill_grace
        self.killed = False
        self.started = time.time()
        self._lock = threading.Lock()

    @property
    def rusage(self):
        """The command's figures once it ended: what the measuring leader reported
        (:data:`MEASURE_LEADER`), else the ``resource.struct_rusage`` of the reaped leader (and what
        it reaped); ``None`` before."""
        if self._usage_fd is not None and self.popen.returncode is not None:
            self._usage = _read_usage(self._usage_fd) or None
            os.close(self._usage_fd)
            self._usage_fd = None
        return self._usage or getattr(self.popen, "rusage", None)

    def close(self) -> None:
        """Release the measuring pipe (after the leader was reaped)."""
        if self._usage_fd is not None:
            os.close(self._usage_fd)
            self._usage_fd = None

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the whole group; ``False`` if no member is left."""
        if self.popen.returncode is not None and not _group_members(self.pgid):
            return False  # leader reaped, group empty: the id may belong to someone else by now
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # pgid reused by someone else's group: leave it alone
            return False

    def group_alive(self) -> bool:
        """Some process of the group still exists (zombies included)."""
        return self.signal(0)

    def kill(self, grace: Optional[float] = None) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left after ``grace`` seconds."""
        self.killed = True
        self._terminate_group(grace)

    def _terminate_group(self, grace: Optional[float] = None) -> None:
        grace = self.kill_grace if grace is None else grace
        with self._lock:
            if not self.signal(signal.SIGTERM):
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if self.popen.poll() is not None and not self._others_alive():
                    return
                time.sleep(0.05)
            self.signal(signal.SIGKILL)

    def _others_alive(self) -> bool:
        """A group member other than the (reaped) leader is alive (not a zombie)."""
        for pid in _group_members(self.pgid):
            if pid != self.pid and not _is_zombie(pid):
                return True
        return False


def _group_members(pgid: int) -> list:
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: be conservative and assume stragglers
        return [-1]
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()
            if len(fields) > 2 and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:].split()[:1] == [b"Z"]


def _reader(stream, name: str, q: "queue.Queue") -> None:
    try:
        while True:
            chunk = stream.readline(MAX_LINE_BYTES)
            if not chunk:
                break
            if chunk.endswith(b"\n"):
                chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1]
            q.put((name, chunk.decode("utf-8", errors="replace")))
    except (OSError, ValueError):  # pipe closed under us
        pass
    finally:
        q.put((name, _EOF))


def _read_usage(fd: int) -> Optional[CommandUsage]:
    os.set_blocking(fd, False)
    try:
        text = os.read(fd, 4096).decode()
    except (BlockingIOError, OSError):
        return None
    try:
        utime, stime, maxrss = text.split()
        return CommandUsage(float(utime), float(stime), int(maxrss))
    except ValueError:  # the leader died before reporting (SIGKILL)
        return None


def _check_executable(argv0: str, env: Optional[Mapping[str, str]], cwd: Optional[str]) -> None:
    """What ``Popen`` would say about ``argv0``, for a command started by the measuring leader."""
    if cwd is not None and not os.path.isdir(cwd):
        raise FileNotFoundError(f"working directory '{cwd}' does not exist")
    if os.sep in argv0:
        path = argv0 if os.path.isabs(argv0) else os.path.join(cwd or os.getcwd(), argv0)
        if not os.path.exists(path):
            raise ExecutableNotFound(argv0, "no such file or directory (not on PATH?)")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise ExecutableNotFound(argv0, "permission denied (not executable?)")
        return
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(argv0, path=search) is None:
        raise ExecutableNotFound(argv0, "no such file or directory (not on PATH?)")


class _TtyStream:
    """The master side of a pty, read like a pipe: the slave's last close reads as EOF (not EIO)."""

    def __init__(self, fd: int):
        self._fd, self._buf = fd, b""

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self._buf and len(self._buf) < limit:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                break
            self._buf += chunk
        cut = self._buf.find(b"\n") + 1 or min(len(self._buf), limit)
        line, self._buf = self._buf[:cut], self._buf[cut:]
        return line

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open_tty() -> tuple:
    """A pty pair with output post-processing off (``\n`` stays ``\n``)."""
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def spawn(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
          preexec_fn: Optional[Callable[[], None]] = None, kill_grace: float = 5.0,
          measure: bool = False, stdout_tty: bool = False) -> ProcessHandle:
    """Start ``argv`` in a new session with stdout/stderr piped (stdout on a pty with ``stdout_tty``);
    raise :class:`ExecutableNotFound`.

    :param measure: start it under :data:`MEASURE_LEADER` (same group, same exit status) so that
        :attr:`ProcessHandle.rusage` is the command's own.
    :param stdout_tty: the child's stdout is a pseudo-terminal (stderr stays a pipe).
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("empty command line")
    usage_r = usage_w = None
    command = argv
    if measure:
        _check_executable(argv[0], env, cwd)
        usage_r, usage_w = os.pipe()
        command = [sys.executable, "-I", "-S", "-c", MEASURE_LEADER, str(usage_w), *argv]
    master, stdout = _open_tty() if stdout_tty else (None, subprocess.PIPE)
    try:
        popen = _UsagePopen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
                            preexec_fn=preexec_fn, bufsize=0, close_fds=True,
                            pass_fds=(usage_w,) if usage_w is not None else ())
    except (FileNotFoundError, PermissionError) as exc:
        for fd in (usage_r, master):
            if fd is not None:
                os.close(fd)
        if isinstance(exc, PermissionError):
            raise ExecutableNotFound(argv[0], "permission denied (not executable?)") from exc
        if cwd is not None and not os.path.isdir(cwd):
            raise FileNotFoundError(f"working directory '{cwd}' does not exist") from exc
        raise ExecutableNotFound(argv[0], "no such file or directory (not on PATH?)") from exc
    finally:
        if usage_w is not None:
            os.close(usage_w)
        if master is not None:
            os.close(stdout)  # the child has its copy; EOF comes when the last holder closes it
    if master is not None:
        popen.stdout = _TtyStream(master)
    return ProcessHandle(popen, kill_grace=kill_grace, usage_fd=usage_r)


def run_streaming(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                  timeout: Optional[float] = None, on_line: Callable[[str, str], None],
                  on_start: Optional[Callable[[ProcessHandle], None]] = None,
                  preexec_fn: Optional[Callable[[], None]] = None, kill_grace: float = 5.0,
                  linger: float = 5.0, measure: bool = False, stdout_tty: bool = False) -> int:
    """Run ``argv`` to completion, calling ``on_line("stdout"|"stderr", text)`` per line.

    :param env: full environment of the child (``None``: inherit ours).
    :param timeout: seconds; on expiry the group is killed and :class:`ProcessTimeout` raised.
    :param on_start: called with the :class:`ProcessHandle` right after the start
        (keep it to :meth:`~ProcessHandle.kill` from another thread).
    :param preexec_fn: run in the child before ``exec`` (e.g. ``setrlimit``).
    :param kill_grace: seconds between SIGTERM and SIGKILL.
    :param linger: once the leader exited, how long to wait for background
        processes that still hold the output pipes before killing the group.
    :param measure: see :func:`spawn` (the figures: ``on_start``'s handle's ``rusage`` afterwards).
    :param stdout_tty: the child's stdout is a pseudo-terminal (see the module docstring).
    :returns: the exit code (negative signal number when killed by a signal).
    :raises ExecutableNotFound: ``argv[0]`` cannot be executed.
    """
    handle = spawn(argv, env=env, cwd=cwd, preexec_fn=preexec_fn, kill_grace=kill_grace, measure=measure,
                   stdout_tty=stdout_tty)
    q: "queue.Queue" = queue.Queue()
    threads = [threading.Thread(target=_reader, args=(s, n, q), daemon=True, name=f"stepcab-{n}-{handle.pid}")
               for s, n in ((handle.popen.stdout, "stdout"), (handle.popen.stderr, "stderr"))]
    for t in threads:
        t.start()
    timed_out = False
    try:
        if on_start is not None:
            on_start(handle)
        deadline = time.monotonic() + timeout if timeout is not None else None
        exit_deadline = None
        open_streams = 2
        while open_streams:
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                threading.Thread(target=handle._terminate_group, daemon=True).start()
                deadline = None
            if exit_deadline is None and handle.popen.poll() is not None:
                exit_deadline = now + linger
            if exit_deadline is not None and now >= exit_deadline:
                handle._terminate_group(grace=0.5)  # orphans hold the pipes open: don't wait forever
                exit_deadline = float("inf")
            waits = [d - now for d in (deadline, exit_deadline) if d is not None and d != float("inf")]
            try:
                name, text = q.get(timeout=max(0.0, min(waits + [0.2])))
            except queue.Empty:
                continue
            if text is _EOF:
                open_streams -= 1
            else:
                on_line(name, text)
        while True:
            try:
                return_code = handle.popen.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if timed_out or deadline is None or time.monotonic() < deadline:
                    continue
                timed_out = True
                handle._terminate_group()
    except BaseException:
        handle._terminate_group(grace=1.0)
        handle.popen.wait()
        raise
    finally:
        for t in threads:
            t.join(timeout=1.0)
        for s in (handle.popen.stdout, handle.popen.stderr):
            try:
                s.close()
            except OSError:
                pass
    if timed_out:
        raise ProcessTimeout(argv, timeout or 0.0, return_code)
    return return_code
