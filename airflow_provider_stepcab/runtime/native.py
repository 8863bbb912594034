"""Run a step's argv natively: stream output through wranglers, decide success.

Mirrors Stimela 2.1.4's native backend: every output line (stdout and stderr
alike, at INFO, trailing whitespace stripped) goes through the cab's
wranglers and, unless suppressed, to ``log(level, text)``. The step succeeds
when the exit code is 0 (or a ``DECLARE_SUCCESS`` wrangler fired) and no
``ERROR`` wrangler fired / no output failed to parse. ``opts.backend.rlimits``
(``{NOFILE: 1024, ...}``; ``None`` = unlimited) are set as soft limits in the
child only. No Airflow import here.
"""

from __future__ import annotations

import collections
import logging
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..recipe.wranglers import WranglerState, Wranglers
from .process import ProcessHandle, ProcessTimeout, run_streaming

LogFn = Callable[[int, str], None]

#: a step whose environment sets this to ``1`` runs with its stdout on a pseudo-terminal
STDOUT_TTY_ENV = "STEPCAB_STDOUT_TTY"


class RlimitError(ValueError):
    """An ``rlimits`` entry names an unknown resource or exceeds the hard limit."""


@dataclass
class RunResult:
    """Outcome of one run.

    :param exit_code: the process's exit code (negative: killed by that signal).
    :param success: Stimela's verdict (see module docstring).
    :param outputs: outputs parsed by wranglers (``PARSE_*``, Python flavours).
    :param errors: why it failed (wrangler errors, exit code, timeout, kill).
    :param warnings: ``WARNING:msg`` wrangler messages.
    :param tail: the last displayed lines (for error reports).
    """

    exit_code: Optional[int]
    success: bool
    outputs: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    tail: list = field(default_factory=list)
    declared_success: bool = False
    timed_out: bool = False
    killed: bool = False
    elapsed: float = 0.0
    #: the process group's resource record (:func:`.accounting.rusage_record`), when it ran
    usage: Optional[dict] = None


def process_usage(handle: Optional[ProcessHandle], exit_code: Optional[int], *rlimit_maps: Any) -> Optional[dict]:
    """The resource record of a finished process group (``None`` if it never started)."""
    if handle is None:
        return None
    from .accounting import rusage_record

    limit = None
    for limits in rlimit_maps:  # backend.rlimits.AS (bytes) is the only memory limit a native step has
        limit = (limits or {}).get("AS", limit)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    mem = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    return rusage_record(handle.rusage, exit_code=exit_code, started=handle.started, ended=time.time(), cpus=cpus,
                         host=os.uname().nodename, mem_limit=mem)


def check_rlimits(rlimits: Optional[Mapping[str, Any]]) -> list:
    """Validate ``rlimits`` against the current hard limits → ``[(resource, soft, hard)]``."""
    checked = []
    for name, limit in (rlimits or {}).items():
        const = getattr(resource, f"RLIMIT_{name}", None)
        if const is None:
            raise RlimitError(f"unknown resource limit 'backend.rlimits.{name}'")
        _soft, hard = resource.getrlimit(const)
        if limit is None:
            if hard != resource.RLIM_INFINITY:
                raise RlimitError(f"can't set backend.rlimits.{name}=unlimited: hard limit is {hard}")
            limit = resource.RLIM_INFINITY
        else:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise RlimitError(f"backend.rlimits.{name}={limit!r}: expected an integer or null (unlimited)")
            if hard != resource.RLIM_INFINITY and limit > hard:
                raise RlimitError(f"can't set backend.rlimits.{name}={limit}: hard limit is {hard}")
        checked.append((const, limit, hard))
    return checked


def rlimit_preexec(rlimits: Optional[Mapping[str, Any]]) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that sets the soft limits in the child (``None`` when there are none)."""
    checked = check_rlimits(rlimits)
    if not checked:
        return None

    def apply() -> None:
        for const, soft, hard in checked:
            resource.setrlimit(const, (soft, hard))

    return apply


class NativeRunner:
    """Runs argvs on this machine. One runner runs one process at a time.

    :param rlimits: default ``opts.backend.rlimits`` for every run.
    :param kill_grace: seconds between SIGTERM and SIGKILL when killing.
    :param tail_lines: how many displayed lines :attr:`RunResult.tail` keeps.
    :param stdout_tty: the child's stdout is a pseudo-terminal (stderr stays a pipe), as when a
        step is run by hand in a shell: tools that wait or buffer when stdout is not a terminal
        (tricolour's five-minute progress-bar wait) don't. ``None`` (default): only for a run
        whose environment sets ``STEPCAB_STDOUT_TTY=1`` (a cab's ``management.environment``;
        Stimela passes it on and ignores it). Stimela always gives a pipe (docs/divergences.md).
    """

    def __init__(self, *, rlimits: Optional[Mapping[str, Any]] = None, kill_grace: float = 5.0,
                 tail_lines: int = 20, stdout_tty: Optional[bool] = None):
        self.stdout_tty = stdout_tty
        self.rlimits = dict(rlimits or {})
        self.kill_grace = kill_grace
        self.tail_lines = tail_lines
        self._handle: Optional[ProcessHandle] = None
        self._kill_requested = False
        self._lock = threading.Lock()

    def _tty_for(self, env: Optional[Mapping[str, str]]) -> bool:
        if self.stdout_tty is not None:
            return self.stdout_tty
        return (os.environ if env is None else env).get(STDOUT_TTY_ENV) == "1"

    def run(self, argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            timeout: Optional[float] = None, wranglers: Optional[Wranglers] = None, log: LogFn,
            rlimits: Optional[Mapping[str, Any]] = None, command_name: Optional[str] = None) -> RunResult:
        """Run ``argv`` to completion and judge it.

        :param env: the child's full environment (``None``: inherit).
        :param wranglers: compiled wranglers (:meth:`.Wranglers.for_cab`).
        :param log: receives ``(logging level, text)`` for each displayed line.
        :param rlimits: overrides the runner's ``rlimits`` (merged over them).
        :raises .process.ExecutableNotFound: ``argv[0]`` cannot be run.
        :raises RlimitError: bad ``rlimits``.
        """
        preexec = rlimit_preexec({**self.rlimits, **(rlimits or {})})
        state = WranglerState(wranglers)
        tail: collections.deque = collections.deque(maxlen=self.tail_lines)
        name = command_name or os.path.basename(str(argv[0]))
        self._kill_requested = False

        def on_line(_stream: str, text: str) -> None:
            res = state.process(text.rstrip(), logging.INFO)
            if res.text is not None:
                tail.append(res.text)
                log(res.level, res.text)

        def on_start(handle: ProcessHandle) -> None:
            with self._lock:
                self._handle = handle
                pending = self._kill_requested
            if pending:
                handle.kill()

        start = time.monotonic()
        timed_out = False
        try:
            exit_code: Optional[int] = run_streaming(
                argv, env=env, cwd=cwd, timeout=timeout, on_line=on_line, on_start=on_start,
                preexec_fn=preexec, kill_grace=self.kill_grace, measure=True, stdout_tty=self._tty_for(env))
        except ProcessTimeout as exc:
            timed_out, exit_code = True, exc.returncode
        finally:
            with self._lock:
                handle, self._handle = self._handle, None
        elapsed = time.monotonic() - start
        killed = bool(handle and handle.killed) or self._kill_requested
        usage = process_usage(handle, exit_code, self.rlimits, rlimits)

        errors = list(state.errors)
        if state.errors:
            errors.insert(0, f"declaring '{name}' as failed based on its output")
        if timed_out:
            errors.append(f"{name} timed out after {timeout:g}s and was killed")
        elif killed:
            errors.append(f"{name} was killed (exit code {exit_code})")
        elif exit_code and not state.declared_success:
            errors.append(f"{name} returns error code {exit_code} after {_hms(elapsed)}")
        success = state.success(exit_code if exit_code is not None else -1) and not (timed_out or killed)
        return RunResult(exit_code=exit_code, success=success, outputs=dict(state.outputs), errors=errors,
                         warnings=list(state.warnings), tail=list(tail),
                         declared_success=state.declared_success, timed_out=timed_out, killed=killed,
                         elapsed=elapsed, usage=usage)

    def kill(self) -> None:
        """Kill the running process group (safe from another thread, e.g. Airflow's ``on_kill``)."""
        with self._lock:
            self._kill_requested = True
            handle = self._handle
        if handle is not None:
            handle.kill()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
