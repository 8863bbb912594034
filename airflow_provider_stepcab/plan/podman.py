"""The ``podman run`` (or ``docker run``) command line of a step (pure).

Not a Stimela 2.1.4 backend: stepcab's own, configured under ``backend.podman`` (or
``backend.docker``: the same plan on another executable), see
:class:`~..recipe.backend_schema.PodmanOptions`. Image resolution and the bind list are exactly
those of the Singularity backend (:func:`.singularity.plan_mounts`), so a recipe behaves the same
on both::

    podman [--root R] [--runroot RR] [--runtime RT] [global_options...] run --rm --name NAME [--replace]
           [--network none] [--user UID:GID] [--userns U] [--ulimit K=V ...] [--memory M] [--cpus C]
           [--device D ...] [--pull P] --workdir CWD [--env K=V ...] [--volume SRC:DST:MODE ...]
           [extra_options...] IMAGE <cab argv>

* the container gets a deterministic ``--name`` (:func:`container_name`), so a killed task can
  ``podman stop``/``kill`` it (:attr:`PodmanPlan.stop_argv`);
* ``user: auto`` runs as the worker's ``uid:gid`` (given by the caller), so outputs land on the
  host owned by the user who runs the task; ``""``/``none`` keeps the image's user;
* ``network`` defaults to ``none`` (steps should not need the network; ``podman``'s default
  network also leaves firewall rules behind on some hosts);
* ``root``/``runroot``/``runtime`` and ``ulimits`` exist because podman 4.3 on some hosts only works
  with ``--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096`` and explicit storage
  paths; for ``docker``, ``runtime`` becomes a ``run`` option and ``root``/``runroot`` are ignored.

Ephemeral binds carry ``::EPHn::`` placeholders like the Singularity plan
(:func:`.singularity.fill_ephemeral`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .images import ImageError, ResolvedImage, resolve_cab_image
from .singularity import FsFacts, plan_mounts

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]+")


def container_name(*parts: Any, prefix: str = "stepcab", max_len: int = 100) -> str:
    """A valid, deterministic container name from ``parts`` (e.g. dag id, run id, task id,
    map index, try number): sanitised, shortened, plus a hash of the full text for uniqueness."""
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    body = _NAME_BAD.sub("-", "-".join(str(p) for p in parts if p not in (None, ""))).strip("-.")
    body = body[: max(0, max_len - len(prefix) - len(digest) - 2)].strip("-.")
    return "-".join(x for x in (prefix, body, digest) if x)


@dataclass
class PodmanPlan:
    """A planned ``podman run`` (``argv`` may hold ``::EPHn::`` placeholders)."""

    argv: list
    base: list            # executable + global options: prefix of every podman command
    engine: str           # "podman" or "docker"
    image: ResolvedImage
    name: str
    binds: list
    ephemeral: dict
    mkdirs: list
    env: dict
    cwd: str
    user: Optional[str]

    @property
    def image_exists_argv(self) -> list:
        """Exit status 0 when the image is present locally."""
        if self.engine == "docker":
            return self.base + ["image", "inspect", "--format", "{{.Id}}", self.image.name]
        return self.base + ["image", "exists", self.image.name]

    @property
    def pull_argv(self) -> list:
        return self.base + ["pull", self.image.name]

    def stop_argv(self, timeout: int = 10) -> list:
        """Stop the step's container (SIGTERM, SIGKILL after ``timeout`` seconds)."""
        return self.base + ["stop", "-t", str(int(timeout)), self.name]

    @property
    def kill_argv(self) -> list:
        return self.base + ["kill", self.name]

    @property
    def rm_argv(self) -> list:
        """Remove the container if it is still there (stale from an earlier, killed run)."""
        return self.base + ["rm", "-f", self.name]


def _as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def podman_argv_for_step(cab: Any, params: Mapping[str, Any], command_argv: Sequence[str], *,
                         backend: Any, settings: Any, cwd: str, fs: FsFacts, name: str,
                         engine: str = "podman", executable: Optional[str] = None,
                         uid_gid: Optional[tuple] = None, images: Optional[Mapping[str, Any]] = None,
                         extra_env: Optional[Mapping[str, str]] = None) -> PodmanPlan:
    """Plan ``podman run ...`` for one step.

    :param cab: the step's cab.
    :param params: resolved parameter values.
    :param command_argv: the cab's own argv.
    :param backend: the step's :class:`~..recipe.backends.BackendOptions` (registries).
    :param settings: the :class:`~..recipe.backend_schema.PodmanOptions` of the section.
    :param cwd: host working directory (``--workdir`` and a read-write bind).
    :param fs: filesystem facts (:class:`.singularity.FsFacts`).
    :param name: the container name (see :func:`container_name`).
    :param engine: ``podman`` or ``docker``.
    :param executable: overrides ``settings.executable`` (default: ``engine``).
    :param uid_gid: ``(uid, gid)`` used for ``user: auto`` (``None``: no ``--user``).
    :param images: the config's ``images`` section.
    :param extra_env: more ``--env`` variables (e.g. ``management.environment``).
    :raises ImageError: no image, or only a prebuilt Singularity ``path``.
    :raises .singularity.ContainerPlanError: see :func:`.singularity.plan_mounts`.
    """
    image = resolve_cab_image(cab, backend, images)
    if image.prebuilt:
        raise ImageError(f"cab '{getattr(cab, 'name', '?')}' names a prebuilt Singularity image "
                         f"({image.path}); {engine} needs a registry image name")
    exe = executable or settings.executable or engine
    base = [exe]
    if engine == "podman":
        for flag, value in (("--root", settings.root), ("--runroot", settings.runroot),
                            ("--runtime", settings.runtime)):
            if value:
                base += [flag, fs.expanduser(str(value)) if flag != "--runtime" else str(value)]
    base += _as_list(settings.global_options)
    cwd = fs.realpath(cwd)
    mounts = plan_mounts(cab, params, cwd=cwd, fs=fs, bind_dirs=settings.bind_dirs, bind_tmp=settings.bind_tmp,
                         ephemeral=settings.ephemeral)
    argv = base + ["run", "--rm", "--name", name]
    if engine == "podman":
        argv.append("--replace")      # a container left behind by an earlier, killed attempt
    if engine == "docker" and settings.runtime:
        argv += ["--runtime", str(settings.runtime)]
    if settings.network:
        argv += ["--network", str(settings.network)]
    user = settings.user
    if user is not None and str(user).strip().lower() == "auto":
        user = f"{uid_gid[0]}:{uid_gid[1]}" if uid_gid is not None else None
    elif user is not None and str(user).strip().lower() in ("", "none", "false"):
        user = None
    if user:
        argv += ["--user", str(user)]
    if settings.userns:
        argv += ["--userns", str(settings.userns)]
    for key, value in (settings.ulimits or {}).items():
        argv += ["--ulimit", f"{key}={value}"]
    if settings.memory:
        argv += ["--memory", str(settings.memory)]
    if settings.cpus:
        argv += ["--cpus", str(settings.cpus)]
    for dev in _as_list(settings.devices):
        argv += ["--device", dev]
    if settings.pull:
        argv += ["--pull", str(settings.pull)]
    argv += ["--workdir", cwd]
    env = {str(k): str(v) for k, v in (settings.env or {}).items()}
    env.update({str(k): str(v) for k, v in (extra_env or {}).items()})
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    for b in mounts.binds:
        argv += ["--volume", f"{b.src}:{b.dest}:{b.mode}"]
    argv += _as_list(settings.extra_options)
    argv.append(image.name)
    argv += [str(a) for a in command_argv]
    return PodmanPlan(argv=argv, base=base, engine=engine, image=image, name=name, binds=mounts.binds,
                      ephemeral=mounts.ephemeral, mkdirs=mounts.mkdirs, env=env, cwd=cwd,
                      user=str(user) if user else None)


__all__ = ["PodmanPlan", "container_name", "podman_argv_for_step"]
