"""Run planned container command lines (Singularity/Apptainer, Podman/Docker). No Airflow import.

The plans come from :mod:`..plan.singularity` and :mod:`..plan.podman`; this module adds what
needs the machine:

* :class:`LocalFs` — the real filesystem facts the planners ask for;
* :func:`find_singularity` / :func:`find_engine` — the runtime executable, found when the step runs
  (``backend.singularity.executable``, else ``apptainer``, else ``singularity`` on ``PATH``);
  a missing one raises :class:`RuntimeMissing` with a readable message;
* :func:`ensure_singularity_image` — ``<exe> build <simg> docker://<image>`` when the cached image is
  missing (``auto_build``) or a rebuild is asked for (``rebuild``); :func:`ensure_engine_image` —
  ``podman image exists`` and, if allowed, ``podman pull``;
* :func:`prepared_mounts` — creates ``mkdir`` bind sources, checks every other bind source exists
  (:class:`BindSourceMissing` otherwise), makes the fresh temporary directories for ``/tmp`` and
  ephemeral binds and removes them afterwards (``clean_tmp``);
* :class:`ContainerRunner` — a :class:`.native.NativeRunner` whose :meth:`~ContainerRunner.kill`
  first stops the named container (``podman stop``), then kills the local process group.

spython is not used (it calls ``sys.exit`` on a missing bind source and raises
``FileNotFoundError`` without Singularity installed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .native import NativeRunner, RunResult
from .process import ExecutableNotFound, run_streaming

LogFn = Callable[[int, str], None]
SINGULARITY_NAMES = ("apptainer", "singularity")


class ContainerError(RuntimeError):
    """A container step cannot be started (runtime, image or bind problem)."""


#: Singularity images (re)built by this worker process: ``rebuild`` happens once per process, as in Stimela
REBUILT_IMAGES: set = set()


class RuntimeMissing(ContainerError):
    """No container runtime executable."""


class BindSourceMissing(ContainerError):
    """A bind mount's host path does not exist."""


class LocalFs:
    """:class:`..plan.singularity.FsFacts` of this machine."""

    exists = staticmethod(os.path.exists)
    isdir = staticmethod(os.path.isdir)
    islink = staticmethod(os.path.islink)
    readlink = staticmethod(os.readlink)
    realpath = staticmethod(os.path.realpath)
    expanduser = staticmethod(os.path.expanduser)


class RemoteHomeFs:
    """This machine's filesystem facts (a filesystem shared with a cluster), but ``~`` is the
    cluster user's home: ``image_dir: ~/.singularity`` and ``~`` binds mean the remote user's."""

    def __init__(self, home: str):
        self._local, self.home = LocalFs(), home.rstrip("/") or "/"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    def expanduser(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        return path


def _which(name: str, path: Optional[str] = None) -> Optional[str]:
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name, path=path)


def find_singularity(executable: Optional[str] = None, *, path: Optional[str] = None) -> str:
    """The Singularity/Apptainer executable: ``executable`` if given, else ``apptainer`` or
    ``singularity`` on ``PATH``.

    :raises RuntimeMissing: nothing found.
    """
    if executable:
        found = _which(str(executable), path)
        if not found:
            raise RuntimeMissing(f"backend.singularity.executable '{executable}' not found or not executable")
        return found
    for name in SINGULARITY_NAMES:
        found = _which(name, path)
        if found:
            return found
    raise RuntimeMissing("neither 'apptainer' nor 'singularity' is on PATH: install Apptainer/SingularityCE, "
                         "set backend.singularity.executable, or select another backend")


def find_engine(engine: str = "podman", executable: Optional[str] = None, *, path: Optional[str] = None) -> str:
    """The ``podman``/``docker`` executable (``executable`` overrides the name).

    :raises RuntimeMissing: not found.
    """
    name = str(executable or engine)
    found = _which(name, path)
    if not found:
        raise RuntimeMissing(f"'{name}' is not on PATH: install {engine}, set backend.{engine}.executable, "
                             "or select another backend")
    return found


def _run_logged(argv: Sequence[str], log: LogFn, what: str, timeout: Optional[float] = None) -> int:
    log(logging.INFO, f"{what}: {' '.join(argv)}")
    try:
        return run_streaming(argv, timeout=timeout, on_line=lambda _s, text: log(logging.INFO, text))
    except ExecutableNotFound as exc:
        raise RuntimeMissing(str(exc)) from None


def ensure_singularity_image(plan: Any, *, log: LogFn, auto_build: bool = True, rebuild: bool = False,
                             rebuilt: Optional[set] = None) -> str:
    """Make sure ``plan.simg`` exists, building it like Stimela does.

    :param plan: a :class:`..plan.singularity.SingularityPlan`.
    :param auto_build: build a missing image (``backend.singularity.auto_build``).
    :param rebuild: rebuild an existing image (``backend.singularity.rebuild`` / ``stepcab build -r``).
    :param rebuilt: images already rebuilt in this session (not rebuilt twice).
    :returns: the image path.
    :raises ContainerError: no image and no build allowed, or the build failed.
    """
    simg = plan.simg
    if plan.image.prebuilt:
        if not os.path.exists(simg):
            raise ContainerError(f"prebuilt image {simg} (image.path) doesn't exist")
        return simg
    image_dir = os.path.dirname(simg)
    if os.path.exists(image_dir) and not os.path.isdir(image_dir):
        raise ContainerError(f"invalid singularity image directory {image_dir}")
    os.makedirs(image_dir, exist_ok=True)
    exists = os.path.exists(simg)
    if exists and rebuild and not (rebuilt is not None and simg in rebuilt):
        log(logging.INFO, f"singularity image {simg} exists but a rebuild was requested")
        os.unlink(simg)
        exists = False
    if exists:
        return simg
    if not (auto_build or rebuild):
        raise ContainerError(f"singularity image {simg} does not exist and auto_build is off "
                             "(run `stepcab build` or enable backend.singularity.auto_build)")
    code = _run_logged(plan.build_argv, log, "building image")
    if code:
        raise ContainerError(f"'{' '.join(plan.build_argv)}' returned {code}")
    if not os.path.exists(simg):
        raise ContainerError(f"the image build returned 0 but {simg} did not appear")
    if rebuilt is not None:
        rebuilt.add(simg)
    return simg


def engine_image_present(plan: Any) -> bool:
    """``podman image exists`` (``docker image inspect``) for the plan's image."""
    try:
        proc = subprocess.run(plan.image_exists_argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    except FileNotFoundError as exc:
        raise RuntimeMissing(f"cannot run '{plan.base[0]}': {exc}") from None
    return proc.returncode == 0


def ensure_engine_image(plan: Any, *, log: LogFn, auto_pull: bool = True, rebuild: bool = False) -> None:
    """Make sure the plan's image is present locally, pulling it when allowed (or asked: ``rebuild``).

    :raises ContainerError: missing and not pullable.
    """
    if engine_image_present(plan) and not rebuild:
        return
    if not (auto_pull or rebuild):
        raise ContainerError(f"image {plan.image.name} is not present locally and auto_pull is off")
    code = _run_logged(plan.pull_argv, log, "pulling image")
    if code:
        raise ContainerError(f"image {plan.image.name} is not present locally and "
                             f"'{' '.join(plan.pull_argv)}' returned {code}")


@contextlib.contextmanager
def prepared_mounts(plan: Any, *, clean_tmp: bool = True, log: Optional[LogFn] = None) -> Iterator[list]:
    """Create/check bind sources and temporary directories; yield the argv ready to run.

    :raises BindSourceMissing: a bind's host path is missing.
    """
    from ..plan.singularity import fill_ephemeral

    for path in plan.mkdirs:
        os.makedirs(path, exist_ok=True)
    for bind in plan.binds:
        if not bind.ephemeral and not os.path.exists(bind.src):
            raise BindSourceMissing(f"bind source {bind.src} (for {bind.dest}) does not exist on this host")
    made: dict = {}
    try:
        for key, base in plan.ephemeral.items():
            os.makedirs(base, exist_ok=True)
            made[key] = tempfile.mkdtemp(dir=base)
            if log:
                log(logging.DEBUG, f"temporary directory {made[key]} for ::{key}::")
        yield fill_ephemeral(plan.argv, made)
    finally:
        if clean_tmp:
            for path in made.values():
                shutil.rmtree(path, ignore_errors=True)


class ContainerRunner(NativeRunner):
    """A :class:`.native.NativeRunner` for container command lines.

    :param stop_argv: run on :meth:`kill` before the process group is killed (``podman stop``).
    :param cleanup_argv: run after a kill (``podman rm -f``), output ignored.
    :param stop_timeout: seconds allowed for ``stop_argv``.
    :param usage_note: said in the run's resource record (``RunResult.usage``) when the process
        group's ``rusage`` is not the container's (podman/docker: the container runs under
        conmon/containerd, outside the client's process tree).
    """

    def __init__(self, *, stop_argv: Optional[Sequence[str]] = None, cleanup_argv: Optional[Sequence[str]] = None,
                 stop_timeout: float = 30.0, usage_note: Optional[str] = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.stop_argv = list(stop_argv) if stop_argv else None
        self.cleanup_argv = list(cleanup_argv) if cleanup_argv else None
        self.stop_timeout = stop_timeout
        self.usage_note = usage_note

    def run(self, argv: Sequence[str], **kwargs: Any) -> RunResult:
        """:meth:`.native.NativeRunner.run`, the record noting :attr:`usage_note`."""
        result = super().run(argv, **kwargs)
        if self.usage_note and result.usage:
            result.usage["note"] = self.usage_note
        return result

    def kill(self) -> None:
        """Stop the container (if named), then kill the local process group."""
        if self.stop_argv:
            run_quiet(self.stop_argv, self.stop_timeout)
        super().kill()
        if self.cleanup_argv:
            run_quiet(self.cleanup_argv, self.stop_timeout)


def run_quiet(argv: Sequence[str], timeout: float = 60.0) -> int:
    """Run ``argv`` with output discarded; the exit code (-1 if it could not run or timed out)."""
    try:
        return subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except (OSError, subprocess.TimeoutExpired):
        return -1


def run_container(argv: Sequence[str], *, runner: NativeRunner, log: LogFn, cwd: Optional[str] = None,
                  env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                  wranglers: Any = None, command_name: Optional[str] = None) -> RunResult:
    """Run a prepared container argv through ``runner`` (output through ``wranglers``).

    :raises RuntimeMissing: the runtime executable vanished.
    """
    try:
        return runner.run(argv, env=env, cwd=cwd, timeout=timeout, wranglers=wranglers, log=log,
                          command_name=command_name)
    except ExecutableNotFound as exc:
        raise RuntimeMissing(str(exc)) from None


__all__ = ["BindSourceMissing", "ContainerError", "ContainerRunner", "LocalFs", "REBUILT_IMAGES", "RemoteHomeFs",
           "RuntimeMissing", "engine_image_present", "ensure_engine_image", "ensure_singularity_image",
           "find_engine", "find_singularity", "prepared_mounts", "run_container", "run_quiet"]
