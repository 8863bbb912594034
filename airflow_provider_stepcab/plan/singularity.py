"""The ``singularity exec`` command line of a step, as Stimela 2.1.4 builds it (pure).

::

    <exe> exec --pwd CWD [--containall|--contain] [--env K=V,K2=V2] [--nv] [extra_options...]
          --bind SRC:DST:MODE ... IMAGE.simg <cab argv>

Bind mounts (:func:`plan_mounts`, shared with :mod:`.podman`), in Stimela's order of decisions:

1. the working directory, read-write;
2. ``bind_dirs`` whose ``conditional`` is true: ``host`` (``~`` expanded, symlinks resolved; it must
   exist unless ``mkdir``, then it is created before the run) on ``target`` (default: ``host``) with
   ``mode``; ``host: ephemeral[:CLASS]`` (or the old ``empty``) is a fresh temporary directory under
   the ``ephemeral`` storage class (default ``{tmp: /tmp}``);
3. for every File/Directory/MS/URI value among the parameters (lists, tuples, dicts and unions
   included; remote URIs skipped): the path, resolved like Stimela's ``URI`` (absolute,
   symlinks resolved) — a directory itself, a file (or missing path) its parent, a missing parent
   its grandparent — read-write when the parameter is ``writable`` or an output; also the parents
   when ``path_policies.access_parent``/``write_parent`` ask for it;
4. symlink targets met on the way up from any mounted path;
5. mounts covered by a parent mount with the same or more rights are dropped;
6. a fresh temporary directory on ``/tmp`` (``bind_tmp``; a string names the storage class)
   unless something is already mounted there.

The list is sorted by container path (parents first), as Stimela does.

Temporary directories are never made here: they appear as placeholders ``::EPH<n>::`` (numbered
in order: ``bind_dirs`` first, then ``/tmp``) with :attr:`SingularityPlan.ephemeral` giving each
one's storage directory; the runtime (:func:`fill_ephemeral`) replaces them by ``mkdtemp`` results
(Stimela's Slurm wrapper does the same on the compute node). Filesystem facts come from an
:class:`FsFacts` object (``runtime.containers.LocalFs`` for the real disk, :class:`MemoryFs` in
tests), so this module does no I/O.

Divergences from Stimela 2.1.4, all opt-in: ``extra_env`` (e.g. ``management.environment``, which
2.1.4 never passes to containers) is added to ``--env``; ``nv``/``extra_options`` are stepcab
settings; the executable is chosen by the caller (``apptainer`` or ``singularity``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

from ..recipe.backend_schema import BindDir
from .images import ResolvedImage, resolve_cab_image

_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_FALSE = {"", "false", "no", "off", "0", "none", "null"}


class ContainerPlanError(ValueError):
    """The container command line cannot be built (bad bind setting, missing host path...)."""


class FsFacts(Protocol):
    """What the planner needs to know about the host filesystem (paths are absolute)."""

    def exists(self, path: str) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def islink(self, path: str) -> bool: ...

    def readlink(self, path: str) -> str: ...

    def realpath(self, path: str) -> str: ...

    def expanduser(self, path: str) -> str: ...


class MemoryFs:
    """An in-memory :class:`FsFacts`: ``dirs``, ``files`` and ``links`` (path → target).

    Parents of every entry exist as directories; ``home`` is what ``~`` expands to.
    """

    def __init__(self, *, dirs: Sequence[str] = (), files: Sequence[str] = (),
                 links: Optional[Mapping[str, str]] = None, home: str = "/root"):
        self.links = {p.rstrip("/") or "/": t for p, t in (links or {}).items()}
        self.files = {p.rstrip("/") for p in files}
        self.dirs = {"/"}
        for p in list(dirs) + list(self.files) + list(self.links):
            parent = p.rstrip("/") if p in dirs else posixpath.dirname(p.rstrip("/"))
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.home = home

    def _resolve(self, path: str, depth: int = 0) -> str:
        parts = [p for p in posixpath.normpath(path).split("/") if p]
        cur = "/"
        for i, part in enumerate(parts):
            nxt = posixpath.join(cur, part)
            if nxt in self.links and depth < 40:
                target = self.links[nxt]
                nxt = self._resolve(target if target.startswith("/") else posixpath.join(cur, target), depth + 1)
            cur = nxt
        return cur

    def exists(self, path: str) -> bool:
        real = self._resolve(path)
        return real in self.dirs or real in self.files

    def isdir(self, path: str) -> bool:
        return self._resolve(path) in self.dirs

    def islink(self, path: str) -> bool:
        return path.rstrip("/") in self.links

    def readlink(self, path: str) -> str:
        return self.links[path.rstrip("/")]

    def realpath(self, path: str) -> str:
        return self._resolve(path)

    def expanduser(self, path: str) -> str:
        return self.home + path[1:] if path == "~" or path.startswith("~/") else path


@dataclass(frozen=True)
class Bind:
    """One bind mount: host ``src`` on container ``dest``; ``rw`` or read-only."""

    src: str
    dest: str
    rw: bool

    @property
    def mode(self) -> str:
        return "rw" if self.rw else "ro"

    @property
    def ephemeral(self) -> bool:
        return self.src.startswith("::")


@dataclass
class MountPlan:
    """Result of :func:`plan_mounts`."""

    binds: list                       # sorted Bind list
    ephemeral: dict                   # "EPH0" -> storage directory
    mkdirs: list = field(default_factory=list)   # bind_dirs hosts to create first


@dataclass
class SingularityPlan:
    """A planned ``singularity exec`` (``argv`` may hold ``::EPHn::`` placeholders)."""

    argv: list
    executable: str
    image: ResolvedImage
    simg: str
    binds: list
    ephemeral: dict
    mkdirs: list
    env: dict
    cwd: str

    @property
    def build_argv(self) -> Optional[list]:
        """``<exe> build <simg> docker://<image>``, or ``None`` for a prebuilt ``image.path``."""
        return None if self.image.prebuilt else [self.executable, "build", self.simg, self.image.docker_uri]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE
    return bool(value)


def _bind_dir(value: Any) -> BindDir:
    if isinstance(value, BindDir):
        return value
    if isinstance(value, Mapping):
        return BindDir(**{k: v for k, v in value.items() if k in BindDir.__dataclass_fields__})
    raise ContainerPlanError(f"invalid bind_dirs entry {value!r}")


def file_values(dtype: Any, value: Any) -> list:
    """Every file-like element of ``value`` for ``dtype`` (Stimela's ``get_filelikes``).

    Unions look into every member the value fits (a path string fits ``str`` and ``File``
    alike, so ``Union[str, File]`` values are bound, as Stimela 2.1.4 does).
    """
    if dtype is None or value is None or not isinstance(value, (str, list, tuple, dict)):
        return []
    if dtype.is_file:
        return [value] if isinstance(value, str) else []
    kind, args = dtype.kind, dtype.args or ()
    if kind in ("List", "Tuple") and isinstance(value, (list, tuple)) and args:
        out = []
        for i, v in enumerate(value):
            out += file_values(args[0] if kind == "List" or dtype.variadic else args[min(i, len(args) - 1)], v)
        return out
    if kind == "Dict" and isinstance(value, dict) and len(args) == 2:
        out = []
        for k, v in value.items():
            out += file_values(args[0], k) + file_values(args[1], v)
        return out
    if kind == "Union":
        out = []
        for member in args:
            if _fits(member, value):
                out += [f for f in file_values(member, value) if f not in out]
        return out
    return []


def _fits(dtype: Any, value: Any) -> bool:
    if dtype.is_file:
        return isinstance(value, str)
    if dtype.kind in ("List", "Tuple"):
        return isinstance(value, (list, tuple))
    if dtype.kind == "Dict":
        return isinstance(value, dict)
    try:
        dtype.validate(value)
        return True
    except (ValueError, TypeError):
        return False


def _abspath(path: str, cwd: str) -> str:
    return posixpath.normpath(posixpath.join(cwd, path))


def plan_mounts(cab: Any, params: Mapping[str, Any], *, cwd: str, fs: FsFacts,
                bind_dirs: Optional[Mapping[str, Any]] = None, bind_tmp: Any = True,
                ephemeral: Optional[Mapping[str, str]] = None) -> MountPlan:
    """The bind mounts of one step (see the module docstring).

    :param cab: the cab (``inputs``/``outputs`` with parsed dtypes).
    :param params: resolved parameter values (relative paths are relative to ``cwd``).
    :param cwd: the step's working directory on the host (mounted read-write).
    :raises ContainerPlanError: a missing ``bind_dirs`` host, conflicting targets, an unknown
        storage class, a parameter missing from the schema, or a missing ``must_exist`` input.
    """
    classes = dict(ephemeral or {}) or {"tmp": "/tmp"}
    cwd = fs.realpath(cwd)
    mounts: dict = {cwd: True}
    c2h: dict = {}        # container path -> host path
    eph: dict = {}
    mkdirs: list = []

    def placeholder(base: str) -> str:
        key = f"EPH{len(eph)}"
        eph[key] = base
        return f"::{key}::"

    for label, raw in (bind_dirs or {}).items():
        bind = _bind_dir(raw)
        where = f"bind_dirs.{label}"
        if not _truthy(bind.conditional):
            continue
        if not bind.host:
            raise ContainerPlanError(f"{where}: 'host' must be set")
        host = str(bind.host)
        src = fs.expanduser(host).rstrip("/")
        dest = fs.expanduser(str(bind.target or src)).rstrip("/")
        rw = str(bind.mode) == "rw"
        if host == "empty":
            if "tmp" not in classes:
                raise ContainerPlanError(f"{where}: 'host: empty' needs a 'tmp' ephemeral storage class")
            host = "ephemeral:tmp"
        if host == "ephemeral" or host.startswith("ephemeral:"):
            if not bind.target:
                raise ContainerPlanError(f"{where}: a target must be specified when host=ephemeral")
            cls = host.split(":", 1)[1] if ":" in host else next(iter(classes))
            if cls not in classes:
                raise ContainerPlanError(f"{where}: class '{cls}' not present in the 'ephemeral' section")
            src = placeholder(classes[cls])
            c2h[fs.expanduser(str(bind.target))] = src
            mounts[src] = rw
            continue
        if fs.exists(src) and fs.realpath(src) != src:
            src = fs.realpath(src)
        if bind.mkdir:
            if fs.exists(src) and not fs.isdir(src):
                raise ContainerPlanError(f"{where}: host path '{src}' is not a directory")
            if not fs.exists(src):
                mkdirs.append(src)
        elif not fs.exists(src):
            raise ContainerPlanError(f"{where}: host path '{src}' does not exist")
        mounts[src] = mounts.get(src, False) or rw
        if src != dest:
            if dest in c2h and c2h[dest] != src:
                raise ContainerPlanError(f"{where}: conflicting bind paths for {dest}")
            c2h.setdefault(dest, src)

    last_name = ["bind_dirs"]

    def add_target(name: str, path: str, must_exist: bool, rw: bool) -> None:
        if not fs.isdir(path):
            path = posixpath.dirname(path)
        if not fs.exists(path):
            if must_exist:
                raise ContainerPlanError(f"parameter '{name}': path '{path}' does not exist")
            path = posixpath.dirname(path)
        path = path.rstrip("/") or "/"
        if path in c2h:
            raise ContainerPlanError(f"{name}: {path} already bound to a different host path")
        mounts[path] = mounts.get(path, False) or rw

    inputs, outputs = getattr(cab, "inputs", {}) or {}, getattr(cab, "outputs", {}) or {}
    for name, value in params.items():
        schema = inputs.get(name) or outputs.get(name)
        if schema is None:
            raise ContainerPlanError(f"parameter '{name}' is not in the inputs or outputs of cab "
                                     f"'{getattr(cab, 'name', '?')}'")
        files = [f for f in file_values(getattr(schema, "dtype", None), value) if f != ""]
        if not files:
            continue
        last_name[0] = name
        must_exist = bool(schema.must_exist) and name in inputs
        rw = bool(schema.writable) or name in outputs
        pp = schema.path_policies
        for f in files:
            if _REMOTE.match(f) and not f.startswith("file://"):
                continue
            f = f[len("file://"):] if f.startswith("file://") else f
            path = fs.realpath(_abspath(fs.expanduser(f), cwd)).rstrip("/") or "/"   # Stimela's URI resolves
            real = fs.realpath(path)
            add_target(name, real, must_exist, rw)
            add_target(name, path, must_exist, rw)
            if pp.access_parent or pp.write_parent:
                add_target(name, posixpath.dirname(path), True, bool(pp.write_parent))
                add_target(name, posixpath.dirname(real), True, bool(pp.write_parent))

    for path, rw in list(mounts.items()):       # symlinks on the way up: bind their targets too
        if path.startswith("::"):
            continue
        while path not in ("/", ""):
            if fs.islink(path):
                prev = path
                while fs.islink(path):
                    target = fs.readlink(path)
                    path = target if target.startswith("/") else _abspath(target, posixpath.dirname(prev))
                    prev = path
                    add_target(last_name[0], path, True, rw)
            path = posixpath.dirname(path)

    covered = set()
    for path, rw in mounts.items():
        if path.startswith("::"):
            continue
        parent = posixpath.dirname(path)
        while parent not in ("/", ""):
            if parent in mounts and mounts[parent] >= rw:
                covered.add(path)
                break
            parent = posixpath.dirname(parent)
    for path in covered:
        mounts.pop(path)

    s2c = {src: dest for dest, src in c2h.items()}
    binds = [(s2c.get(src, src), src, rw) for src, rw in mounts.items()]
    if _truthy(bind_tmp) and not any(dest == "/tmp" for dest, _, _ in binds):
        cls = bind_tmp if isinstance(bind_tmp, str) and bind_tmp.lower() not in ("true", "yes", "on", "1") \
            else "tmp"
        if cls not in classes:
            raise ContainerPlanError(f"bind_tmp uses an undefined ephemeral storage class '{cls}'")
        binds.append(("/tmp", placeholder(classes[cls]), True))
    return MountPlan(binds=[Bind(src, dest, rw) for dest, src, rw in sorted(binds)], ephemeral=eph,
                     mkdirs=mkdirs)


def fill_ephemeral(argv: Sequence[str], dirs: Mapping[str, str]) -> list:
    """Replace ``::EPHn::`` placeholders in ``argv`` by the directories in ``dirs`` (``EPHn`` → path)."""
    out = []
    for arg in argv:
        for key, path in dirs.items():
            arg = arg.replace(f"::{key}::", path)
        out.append(arg)
    return out


def singularity_argv_for_step(cab: Any, params: Mapping[str, Any], command_argv: Sequence[str], *,
                              backend: Any, cwd: str, fs: FsFacts, executable: str = "singularity",
                              images: Optional[Mapping[str, Any]] = None,
                              extra_env: Optional[Mapping[str, str]] = None) -> SingularityPlan:
    """Plan ``<executable> exec ...`` for one step (also used inside Slurm jobs).

    :param cab: the step's cab.
    :param params: resolved parameter values.
    :param command_argv: the cab's own argv (:func:`.flavours.build_flavour_argv`).
    :param backend: the step's :class:`~..recipe.backends.BackendOptions` (``singularity`` section,
        ``default_registry``, ``override_registries``).
    :param cwd: host working directory (``--pwd`` and a read-write bind).
    :param fs: filesystem facts (see :class:`FsFacts`).
    :param executable: ``apptainer``/``singularity`` or a path (detected by the runtime).
    :param images: the config's ``images`` section (flavour default images).
    :param extra_env: more ``--env`` variables (after ``singularity.env``).
    :raises ContainerPlanError: see :func:`plan_mounts`; :class:`.images.ImageError`: no image.
    """
    sing = backend.singularity
    image = resolve_cab_image(cab, backend, images)
    simg = image.simg_path(fs.expanduser(str(sing.image_dir)))
    cwd = fs.realpath(cwd)
    mounts = plan_mounts(cab, params, cwd=cwd, fs=fs, bind_dirs=sing.bind_dirs, bind_tmp=sing.bind_tmp,
                         ephemeral=sing.ephemeral)
    argv = [executable, "exec", "--pwd", cwd]
    if _truthy(sing.containall):
        argv.append("--containall")
    elif _truthy(sing.contain):
        argv.append("--contain")
    env = {str(k): str(v) for k, v in (sing.env or {}).items()}
    env.update({str(k): str(v) for k, v in (extra_env or {}).items()})
    if env:
        argv += ["--env", ",".join(f"{k}={v}" for k, v in env.items())]
    if _truthy(getattr(sing, "nv", False)):
        argv.append("--nv")
    argv += [str(x) for x in (getattr(sing, "extra_options", None) or [])]
    for b in mounts.binds:
        argv += ["--bind", f"{b.src}:{b.dest}:{b.mode}"]
    argv.append(simg)
    argv += [str(a) for a in command_argv]
    return SingularityPlan(argv=argv, executable=executable, image=image, simg=simg, binds=mounts.binds,
                           ephemeral=mounts.ephemeral, mkdirs=mounts.mkdirs, env=env, cwd=cwd)


__all__ = ["Bind", "ContainerPlanError", "FsFacts", "MemoryFs", "MountPlan", "SingularityPlan", "file_values",
           "fill_ephemeral", "plan_mounts", "singularity_argv_for_step"]
