"""The one plan of a resolved cab step: its command line and what each backend runs.

Every path that turns a resolved step into something to execute goes through here, so that
``stepcab plan`` and a running task cannot build a step's command differently:

1. :func:`cab_argv` — resolved params → the cab's own argv (``{}``-substitution of ``command`` /
   ``args`` — a shell script's fields quoted, :mod:`.shellsubst` — then the flavour's rules,
   :mod:`.flavours` / :mod:`.argv`). A :class:`CommandTarget` says where it runs (interpreter
   name, ``virtual_env``, whether ``yield_output`` is defined inline);
2. the backend's command around it, a :class:`StepCommand`: :func:`native_command` (argv, with the
   ``virtual_env`` wrap), :func:`singularity_command` (``singularity exec ...``),
   :func:`podman_command` (``podman run ...``), :func:`pod_command` (the pod manifest);
3. Slurm wraps an inner :class:`StepCommand` (:func:`slurm_job`: the batch job running it).

Pure: no I/O (filesystem facts come in through an :class:`~.singularity.FsFacts`), no Airflow.
A *step* here is anything with the attributes of
:class:`~airflow_provider_stepcab.operators.resolve.ResolvedStep` (:class:`StepLike`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol

from .flavours import build_flavour_argv, venv_wrap


class StepLike(Protocol):
    """What planning needs of a resolved step (params resolved, backend chosen)."""

    fqname: str
    cab: Any
    params: dict
    ns: dict
    workdir: Any          # ``.path``: the run's working directory
    backend: Any          # BackendOptions
    env: dict             # management.environment, evaluated
    config: Any           # LoadedConfig (its ``images`` section)


@dataclass(frozen=True)
class CommandTarget:
    """Where a cab's argv runs: the interpreter of Python flavours, the ``virtual_env`` and whether
    ``yield_output`` is defined inline (interpreters without Stimela's ``scabha``)."""

    python: str = "python"
    virtual_env: Optional[str] = None
    inline_yield: bool = False


#: the command line exactly as Stimela 2.1.4 builds it (what ``stepcab plan`` prints)
STIMELA = CommandTarget()
#: inside a Singularity/Podman container (the image's ``python``)
CONTAINER = CommandTarget(python="python", inline_yield=True)
#: inside a Kubernetes pod
POD = CommandTarget(python="python3", inline_yield=True)


def cab_argv(cab: Any, params: Mapping[str, Any], substitute: Optional[Callable[[str], Any]] = None, *,
             target: CommandTarget = STIMELA) -> list:
    """The argv of ``cab`` with resolved ``params``: THE place a cab's command line is built.

    :param substitute: ``{}``-substitution of ``command``/``args`` (and of the Python/CASA command);
        ``None``: as written.
    :raises RecipeError: (``CommandLineError``, ``FlavourError``, ``ShellSubstitutionError``) naming
        the parameter or setting.
    """
    if substitute is not None and (cab.flavour.kind or "binary") == "binary":
        from .shellsubst import substituted_cab

        cab = substituted_cab(cab, substitute)
    return list(build_flavour_argv(cab, dict(params), python=target.python, virtual_env=target.virtual_env,
                                   substitute=substitute, inline_yield=target.inline_yield))


def step_substitute(ns: Mapping[str, Any]) -> Callable[[str], Any]:
    """``{}``-substitution with a running step's namespaces (every name must be known)."""
    from ..recipe.subst import substitute

    return lambda text: substitute(text, ns) if isinstance(text, str) and "{" in text else text


@dataclass
class StepCommand:
    """A step's planned command.

    :ivar backend: ``native``, ``singularity``, ``podman``, ``docker``, ``kube``.
    :ivar argv: the cab's own argv (for the record and the logs).
    :ivar command: what the mechanism executes (``None`` for a pod: see ``plan``).
    :ivar plan: the backend's full plan (``SingularityPlan``, ``PodmanPlan``, ``PodPlan``) or ``None``.
    """

    backend: str
    argv: list
    command: Optional[list]
    plan: Any = None


def native_command(step: StepLike, *, python: str) -> StepCommand:
    """The native command: the cab's argv, run through ``backend.native.virtual_env`` when set.

    :param python: the worker's interpreter for Python flavours (``python3`` in a virtual_env).
    """
    native = getattr(step.backend, "native", None)
    venv = getattr(native, "virtual_env", None) or None
    if venv:  # evaluated when the step runs, as Stimela does (``{config.run.env.X}/venv``, ``=formula``)
        from ..recipe.values import evaluate_value

        venv = str(evaluate_value(venv, step.ns))
    target = CommandTarget(python="python3" if venv else python, inline_yield=True)
    subst = step_substitute(step.ns)
    argv = cab_argv(step.cab, step.params, subst, target=target)
    if not venv:
        return StepCommand("native", argv, argv)
    if (step.cab.flavour.kind or "binary") == "binary":
        return StepCommand("native", argv, venv_wrap(argv, venv))
    return StepCommand("native", argv, cab_argv(step.cab, step.params, subst,
                                                target=dataclasses.replace(target, virtual_env=venv)))


def container_argv(step: StepLike, target: CommandTarget = CONTAINER) -> list:
    """The cab's argv run inside a container or pod."""
    return cab_argv(step.cab, step.params, step_substitute(step.ns), target=target)


def _images(step: StepLike) -> Mapping[str, Any]:
    from .images import images_section

    return images_section(step.config)


def singularity_command(step: StepLike, *, executable: str, fs: Any) -> StepCommand:
    """``<executable> exec ...`` of the step (``::EPHn::`` temporary-directory placeholders kept).

    :param fs: filesystem facts (:class:`~.singularity.FsFacts`).
    :raises ContainerPlanError: a bad bind setting or missing path; :class:`.images.ImageError`: no image.
    """
    from .singularity import singularity_argv_for_step

    argv = container_argv(step)
    plan = singularity_argv_for_step(step.cab, step.params, argv, backend=step.backend,
                                     cwd=str(step.workdir.path), fs=fs, executable=executable,
                                     images=_images(step), extra_env=step.env)
    return StepCommand("singularity", argv, plan.argv, plan)


def podman_command(step: StepLike, *, engine: str, settings: Any, executable: str, fs: Any, name: str,
                   uid_gid: Optional[tuple]) -> StepCommand:
    """``podman run ...`` (``docker run ...``) of the step.

    :param settings: the engine's :class:`~..recipe.backend_schema.PodmanOptions`.
    :param name: the container name (:func:`.podman.container_name`).
    :raises ContainerPlanError|ImageError: see :func:`.podman.podman_argv_for_step`.
    """
    from .podman import podman_argv_for_step

    argv = container_argv(step)
    plan = podman_argv_for_step(step.cab, step.params, argv, backend=step.backend, settings=settings,
                                cwd=str(step.workdir.path), fs=fs, name=name, engine=engine, executable=executable,
                                uid_gid=uid_gid, images=_images(step), extra_env=step.env)
    return StepCommand(engine, argv, plan.argv, plan)


def pod_image(step: StepLike) -> str:
    """The cab's registry image for a pod (``image.path`` — a Singularity file — cannot run in one).

    :raises PodPlanError: no usable image.
    """
    from .images import ImageError, cab_image_spec, resolve_image
    from .pod import PodPlanError

    backend = step.backend
    spec = cab_image_spec(step.cab, _images(step))
    if spec is not None and spec.path:
        if not spec.name:
            raise PodPlanError(f"cab '{step.cab.name}': image.path ({spec.path}) is an image file; "
                               "the kube backend needs a registry image (image.name)")
        spec = dataclasses.replace(spec, path=None)
    try:
        return resolve_image(spec, default_registry=backend.default_registry,
                             override_registries=backend.override_registries, cab_name=step.cab.name).name
    except ImageError as exc:
        raise PodPlanError(str(exc)) from None


def pod_command(step: StepLike, *, identity: Any, fallback_uid: Optional[int] = None,
                fallback_gid: Optional[int] = None) -> StepCommand:
    """The pod manifest of the step (:func:`.pod.build_pod`; ``plan`` is the ``PodPlan``).

    :raises PodPlanError|RecipeError: unsupported settings, files outside the mounts, bad argv.
    """
    from .pod import build_pod

    backend = step.backend
    argv = container_argv(step, POD)
    plan = build_pod(cab=step.cab, params=step.params, argv=argv, image=pod_image(step), kube=backend.kube,
                     identity=identity, workdir=str(step.workdir.path), env=step.env,
                     slurm=getattr(backend, "wrapper", None) == "slurm",
                     fallback_uid=fallback_uid, fallback_gid=fallback_gid)
    return StepCommand("kube", argv, None, plan)


@dataclass
class SlurmWrap:
    """What a Slurm job adds around its inner command: shell lines run first in the job
    (``setup``), ``::EPHn::`` directories the job makes (``ephemeral``) and whether it removes them."""

    setup: list = field(default_factory=list)
    ephemeral: dict = field(default_factory=dict)
    clean_ephemeral: bool = True


def slurm_job(opts: Any, inner: StepCommand, *, name: str, directory: str, workdir: str,
              env: Mapping[str, str], wrap: Optional[SlurmWrap] = None,
              executable: Optional[str] = None) -> Any:
    """The Slurm job running ``inner`` (a ``native`` or ``singularity`` :class:`StepCommand`).

    :param opts: the :class:`~.slurm.SlurmSubmitOptions`.
    :param executable: replaces ``inner.command[0]`` (the runtime found on the cluster).
    :returns: the :class:`~.sbatch.SlurmJobSpec` (:func:`.sbatch.build_sbatch_script` makes the script).
    :raises SlurmPlanError: the inner backend cannot run under Slurm, or bad options.
    """
    from .slurm import build_job_spec

    argv = list(inner.command or [])
    if executable and argv:
        argv[0] = executable
    wrap = wrap or SlurmWrap()
    return build_job_spec(opts, name=name, directory=directory, workdir=workdir, backend_name=inner.backend,
                          env=dict(env), argv=argv, setup=list(wrap.setup), ephemeral=dict(wrap.ephemeral),
                          clean_ephemeral=wrap.clean_ephemeral)


__all__ = ["CONTAINER", "POD", "STIMELA", "CommandTarget", "SlurmWrap", "StepCommand", "StepLike", "cab_argv",
           "container_argv", "native_command", "pod_command", "pod_image", "podman_command",
           "singularity_command", "slurm_job", "step_substitute"]
