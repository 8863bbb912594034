"""Remote Slurm submission settings of a step → :class:`~.sbatch.SlurmJobSpec`. Pure: no I/O.

Stimela 2.1.4 wraps a step in a blocking ``srun`` on the local machine. stepcab instead submits a
batch job over SSH (``sbatch``) and waits deferred. The settings live in the merged backend
mapping's ``slurm`` section (Stimela's keys plus ours)::

    backend:
      slurm:
        enable: true
        srun_opts: {mem: 8G, cpus-per-task: 4, time: "1:00:00", partition: main, gres: "gpu:1"}
        # stepcab extras
        ssh_conn_id: stepcab_cluster       # Airflow SSH connection to the login node
        remote_dir: /scratch/me/stepcab    # job directories (absolute, or relative to the remote $HOME)
        remote_workdir: /data/run1         # where the command runs (default: the run's workdir)
        remote_dependencies: ["module load apptainer"]   # shell lines before the command
        sbatch_opts: {qos: long, account: radio}          # extra #SBATCH options (win over srun_opts)
        poll_interval: 10                  # seconds between cluster queries
        stream_logs: true                  # copy stdout/stderr into the task log while the job runs
        cleanup: never                     # never | on_success | always (the remote job directory)

``srun_opts`` become ``#SBATCH`` options verbatim (Stimela uses the keys verbatim too);
``sbatch_opts`` win over them. ``slurm`` + ``kube`` is an error, as in Stimela.

Every key and default is declared once, in ``recipe/backend_schema.py``'s ``SlurmOptions``;
:func:`parse_slurm_options` is the one parser of their values.

Singularity under Slurm: :func:`singularity_prepare_script` (run over SSH on the login node: the
dependencies, the executable, the image with ``build_local``) and :func:`image_lines` (the image
check/build as a step of the job script); the ``::EPHn::`` directories are made by the job script
(:class:`~.sbatch.SlurmJobSpec` ``ephemeral``).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Optional, Sequence

from ..recipe.backend_schema import SlurmOptions as _SchemaOptions
from .sbatch import SlurmJobSpec, job_name

#: the schema's defaults (``recipe/backend_schema.py`` declares every ``backend.slurm`` key)
_D = _SchemaOptions()
#: keys of Stimela's ``SlurmOptions`` (handled by ``recipe/backends.py``; not ours)
STIMELA_KEYS = ("enable", "srun_path", "srun_opts", "srun_opts_build", "build_local")
CLEANUP_CHOICES = ("never", "on_success", "always")
DEFAULT_REMOTE_DIR = _D.remote_dir
#: ``ssh_conn_id`` value meaning "this machine is the login node" (no SSH; docs/hpc-site.md)
LOCAL = "local"
#: how many earlier tries a retry looks for (by their deterministic job names)
REATTACH_TRIES = 8


class SlurmPlanError(ValueError):
    """Invalid remote-submission settings (the message names the key)."""


@dataclass(frozen=True)
class SlurmSubmitOptions:
    """stepcab's remote submission options, read from ``backend.slurm``.

    :param ssh_conn_id: Airflow SSH connection of the cluster's login node.
    :param remote_dir: base of the per-task job directories (relative: to the remote ``$HOME``).
    :param remote_workdir: directory the command runs in; default: the run's working directory
        (a filesystem shared between the Airflow worker and the cluster, as Stimela assumes).
    :param remote_dependencies: shell lines run in the batch script before the command.
    :param sbatch_opts: extra ``#SBATCH`` options, winning over ``srun_opts``.
    :param srun_opts: Stimela's resource options, honoured as ``#SBATCH`` options.
    :param poll_interval: seconds between cluster queries (one per cluster, shared by all jobs).
    :param stream_logs: copy the job's stdout/stderr into the task log while it runs.
    :param cleanup: remove the remote job directory: ``never``, ``on_success`` or ``always``.
    :param exit_grace: seconds to wait for a lagging exit-code file once Slurm says the job ended.
    :param missing_grace: seconds a just-submitted job may be absent from both squeue and sacct.
    :param ssh_patience: seconds of failing SSH (with reconnects) before the task gives up.
    :param term_grace: seconds between TERM and KILL of the command when the job is stopped.
    :param log_chunk_size: maximum bytes of each log read per poll.
    :param retry_resources: how a retry raises ``mem``/``time`` after ``OUT_OF_MEMORY``/``TIMEOUT``
        (:mod:`.escalate`).
    """

    ssh_conn_id: str = _D.ssh_conn_id
    remote_dir: str = _D.remote_dir
    remote_workdir: Optional[str] = _D.remote_workdir
    remote_dependencies: tuple = tuple(_D.remote_dependencies)
    sbatch_opts: Mapping[str, Any] = field(default_factory=dict)
    srun_opts: Mapping[str, Any] = field(default_factory=dict)
    poll_interval: float = _D.poll_interval
    stream_logs: bool = _D.stream_logs
    cleanup: str = _D.cleanup
    exit_grace: float = _D.exit_grace
    missing_grace: float = _D.missing_grace
    ssh_patience: float = _D.ssh_patience
    term_grace: int = _D.term_grace
    log_chunk_size: int = _D.log_chunk_size
    retry_resources: Mapping[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        """``ssh_conn_id: local``: the worker runs on the login node and calls sbatch itself."""
        return self.ssh_conn_id == LOCAL


#: our keys (declared, with their defaults, by ``recipe/backend_schema.py``'s ``SlurmOptions``)
OUR_KEYS = tuple(f.name for f in fields(SlurmSubmitOptions) if f.name != "srun_opts")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise SlurmPlanError(f"backend.slurm.{key}: expected a bool, got {value!r}")


def _number(key: str, value: Any, kind: type = float, minimum: float = 0) -> Any:
    if isinstance(value, bool):
        raise SlurmPlanError(f"backend.slurm.{key}: expected a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SlurmPlanError(f"backend.slurm.{key}: expected a number, got {value!r}") from None
    if number < minimum:
        raise SlurmPlanError(f"backend.slurm.{key}: must be >= {minimum}, got {value!r}")
    return number


def _mapping(key: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SlurmPlanError(f"backend.slurm.{key}: expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def parse_slurm_options(section: Optional[Mapping[str, Any]]) -> tuple:
    """Read our options from a merged ``backend.slurm`` mapping.

    :returns: ``(SlurmSubmitOptions, unknown_keys)``.
    :raises SlurmPlanError: a value of the wrong type, naming the key.
    """
    section = dict(section or {})
    kw: dict = {}
    unknown = [k for k in section if k not in OUR_KEYS and k not in STIMELA_KEYS]
    for key in ("ssh_conn_id", "remote_dir", "remote_workdir"):
        if section.get(key) not in (None, ""):
            if not isinstance(section[key], str):
                raise SlurmPlanError(f"backend.slurm.{key}: expected a string, got {section[key]!r}")
            kw[key] = section[key]
    deps = section.get("remote_dependencies")
    if deps is not None:
        if isinstance(deps, str):
            deps = [deps]
        if not isinstance(deps, Sequence) or not all(isinstance(d, str) for d in deps):
            raise SlurmPlanError(f"backend.slurm.remote_dependencies: expected a list of shell lines, got {deps!r}")
        kw["remote_dependencies"] = tuple(deps)
    for key in ("sbatch_opts", "srun_opts"):
        if key in section:
            kw[key] = _mapping(key, section[key])
    for key in ("poll_interval", "exit_grace", "missing_grace", "ssh_patience"):
        if section.get(key) is not None:
            kw[key] = _number(key, section[key], float, 0.1 if key == "poll_interval" else 0)
    for key in ("term_grace", "log_chunk_size"):
        if section.get(key) is not None:
            kw[key] = _number(key, section[key], int, 1)
    if section.get("retry_resources") is not None:
        from .escalate import EscalationError, parse_retry_resources

        try:
            parse_retry_resources(section["retry_resources"])
        except EscalationError as exc:
            raise SlurmPlanError(str(exc)) from None
        kw["retry_resources"] = dict(section["retry_resources"])
    if section.get("stream_logs") is not None:
        kw["stream_logs"] = _bool("stream_logs", section["stream_logs"])
    if section.get("cleanup") is not None:
        value = section["cleanup"]
        value = "always" if value is True else "never" if value is False else value
        if value not in CLEANUP_CHOICES:
            raise SlurmPlanError(f"backend.slurm.cleanup: '{value}' is not one of {', '.join(CLEANUP_CHOICES)}")
        kw["cleanup"] = value
    return SlurmSubmitOptions(**kw), unknown


def sbatch_options(opts: SlurmSubmitOptions) -> dict:
    """``srun_opts`` then ``sbatch_opts`` (winning), as ``#SBATCH`` options.

    Slurm's own time limit is what kills a job that runs too long: the batch shell gets TERM at
    the limit (then KILL after ``KillWait``), the wrapper records exit code 143 and ``sacct``
    says ``TIMEOUT``. The early ``--signal`` of :mod:`.sbatch` would turn that into a plain
    ``FAILED``, so it is switched off unless ``sbatch_opts.signal`` asks for one.
    """
    merged: dict = {"signal": None}
    merged.update(opts.srun_opts)
    merged.update(opts.sbatch_opts)
    for reserved in ("J", "job-name", "o", "output", "e", "error", "parsable"):
        if reserved in merged:
            src = "sbatch_opts" if reserved in opts.sbatch_opts else "srun_opts"
            raise SlurmPlanError(f"backend.slurm.{src}.{reserved}: set by stepcab, cannot be overridden")
    return merged


def requested_resources(opts: SlurmSubmitOptions) -> dict:
    """The step's own ``mem`` and ``time`` requests (``sbatch_opts`` over ``srun_opts``), Slurm syntax."""
    merged = sbatch_options(opts)
    return {"mem": merged.get("mem"), "time": merged.get("time", merged.get("t"))}


def with_resources(opts: SlurmSubmitOptions, raised: Mapping[str, Mapping[str, str]]) -> SlurmSubmitOptions:
    """``opts`` asking for the raised amounts (:func:`.escalate.escalate`) through ``sbatch_opts``."""
    if not raised:
        return opts
    sbatch = dict(opts.sbatch_opts)
    srun = dict(opts.srun_opts)
    for resource, change in raised.items():
        if resource == "time":
            sbatch.pop("t", None)
            srun.pop("t", None)
        sbatch[resource] = change["to"]
    return replace(opts, sbatch_opts=sbatch, srun_opts=srun)


_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def _component(text: str) -> str:
    safe = _SAFE.sub("_", str(text)).strip("._") or "_"
    if len(safe) > 80:
        safe = safe[:69] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return safe


def job_dir(base: str, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """Remote directory of one task try: ``<base>/<dag>/<run>/<task>[.<map>]/try-<n>``."""
    task = task_id if map_index is None or map_index < 0 else f"{task_id}.{map_index}"
    return posixpath.join(base.rstrip("/") or "/", _component(dag_id), _component(run_id), _component(task),
                          f"try-{int(try_number)}")


def try_names(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> dict:
    """Job names of this try and the earlier ones (``{try_number: name}``, newest first).

    Job names include the try number, so the jobs of different tries never mix in Slurm's
    accounting. A retry (or a restarted worker) computes the names of earlier tries too and
    reattaches to one that is still queued/running or that completed with exit code 0 instead of
    submitting again (see ``docs/slurm.md``).
    """
    first = max(1, int(try_number) - REATTACH_TRIES + 1)
    return {n: job_name(dag_id, run_id, task_id, -1 if map_index is None else map_index, n)
            for n in range(int(try_number), first - 1, -1)}


def check_backend(backend_name: str) -> None:
    """Slurm wraps ``native`` or ``singularity`` only (Stimela: slurm + kube is an error)."""
    if backend_name == "kube":
        raise SlurmPlanError("backend.slurm: can't combine slurm with the kube backend "
                             "(select native or singularity, or disable slurm)")
    if backend_name not in ("native", "singularity"):
        raise SlurmPlanError(f"backend.slurm: can't wrap the '{backend_name}' backend")


def build_job_spec(opts: SlurmSubmitOptions, *, argv: Sequence[str], name: str, directory: str,
                   workdir: Optional[str], backend_name: str = "native",
                   env: Optional[Mapping[str, str]] = None, setup: Sequence[str] = (),
                   ephemeral: Optional[Mapping[str, str]] = None, clean_ephemeral: bool = True) -> SlurmJobSpec:
    """The batch job of one step try.

    :param argv: the planned command (native or singularity argv, ``::EPHn::`` placeholders kept).
    :param name: the job name (:func:`try_names`).
    :param directory: the job directory (:func:`job_dir`, absolute on the cluster).
    :param workdir: the run's working directory (used unless ``remote_workdir`` is set).
    :param setup: shell lines after ``remote_dependencies`` (:func:`image_lines`, bind ``mkdir``).
    :param ephemeral: ``{"EPH0": "/tmp"}``: temporary directories made on the compute node.
    :param clean_ephemeral: remove them at the end (``singularity.clean_tmp``).
    """
    check_backend(backend_name)
    if not posixpath.isabs(directory):
        raise SlurmPlanError(f"backend.slurm.remote_dir: job directory {directory!r} is not absolute")
    return SlurmJobSpec(job_name=name, job_dir=directory, argv=[str(a) for a in argv],
                        workdir=opts.remote_workdir or workdir or directory,
                        sbatch_options=sbatch_options(opts), remote_dependencies=tuple(opts.remote_dependencies),
                        env=dict(env or {}), term_grace=opts.term_grace, setup=tuple(setup),
                        ephemeral=dict(ephemeral or {}), clean_ephemeral=clean_ephemeral)


# --------------------------------------------------------------------------- singularity under slurm

#: what the login-node preparation prints to name the executable the job runs
EXE_MARK = "STEPCAB_EXE="
SINGULARITY_NAMES = ("apptainer", "singularity")

_IMAGE_FN = r"""_sc_image() {  # _sc_image EXE SIMG SOURCE REBUILD AUTO_BUILD: make sure SIMG exists
  if [ -e "$2" ] && [ "$4" != 1 ]; then echo "stepcab: singularity image $2 present"; return 0; fi
  if [ -z "$3" ]; then echo "stepcab: prebuilt singularity image $2 (image.path) doesn't exist" >&2; return 1; fi
  if [ "$4" != 1 ] && [ "$5" != 1 ]; then
    echo "stepcab: singularity image $2 does not exist and auto_build is off" >&2; return 1
  fi
  mkdir -p "$(dirname "$2")" || return 1
  local tmp="$2.stepcab-build.$$" rc=0
  rm -rf "$tmp"
  echo "stepcab: building singularity image $2 from $3"
  "$1" build "$tmp" "$3" || rc=$?
  if [ "$rc" != 0 ]; then rm -rf "$tmp"; echo "stepcab: '$1 build $2 $3' returned $rc" >&2; return "$rc"; fi
  mv -f "$tmp" "$2"
}"""


@dataclass(frozen=True)
class ImageCheck:
    """The Singularity image a job needs: ``simg`` (on the cluster), built from ``source``
    (``docker://...``; ``None`` for a prebuilt ``image.path``) when missing and ``auto_build``,
    or always when ``rebuild``. Built into a temporary name and moved, so jobs never see half an image."""

    simg: str
    source: Optional[str]
    auto_build: bool = True
    rebuild: bool = False


def image_lines(exe_word: str, image: ImageCheck) -> list:
    """Shell lines making sure ``image`` exists (``<exe> build <simg> docker://<image>``), else
    ``exit`` with the build's status.

    :param exe_word: the executable as a shell word (already quoted, e.g. ``'"$_sc_exe"'``).
    """
    q = shlex.quote
    call = " ".join([exe_word, q(image.simg), q(image.source or ""), "1" if image.rebuild else "0",
                     "1" if image.auto_build else "0"])
    return [_IMAGE_FN, f"_sc_image {call} || exit $?"]


def singularity_prepare_script(remote_dependencies: Sequence[str], *, executable: Optional[str] = None,
                               image: Optional[ImageCheck] = None, workdir: Optional[str] = None) -> str:
    """Bash text run over SSH on the login node before submitting a singularity step.

    Like the job script, changes to ``workdir`` and runs ``remote_dependencies`` (``module load
    apptainer``); then finds the executable (``executable``, else ``apptainer`` or ``singularity``
    on ``PATH``) and prints ``STEPCAB_EXE=<name>`` (a bare name is looked up again on the compute
    node); with ``image`` (``build_local: true``) it also makes sure the image exists, building it there.
    """
    q = shlex.quote
    wanted = executable or " or ".join(SINGULARITY_NAMES)
    lines = [f"cd {q(workdir)} || exit 125"] if workdir else []
    lines += [str(line) for line in remote_dependencies]
    if executable:
        lines.append(f"_sc_exe={q(executable)}")
    else:
        lines.append("_sc_exe=")
        lines.append(f"for _sc_n in {' '.join(SINGULARITY_NAMES)}; do "
                     'command -v "$_sc_n" >/dev/null 2>&1 && { _sc_exe=$_sc_n; break; }; done')
    lines.append('if [ -z "$_sc_exe" ] || ! command -v "$_sc_exe" >/dev/null 2>&1; then')
    lines.append(f"  echo {q(f'stepcab: {wanted} not found on the PATH of the cluster (after remote_dependencies)')}"
                 " >&2; exit 127")
    lines.append("fi")
    lines.append(f"printf '{EXE_MARK}%s\\n' \"$_sc_exe\"")
    if image is not None:
        lines += image_lines('"$_sc_exe"', image)
    return "\n".join(lines) + "\n"


def parse_prepare_output(text: str) -> Optional[str]:
    """The executable named by :func:`singularity_prepare_script`'s output (``None`` if absent)."""
    for line in reversed(text.split("\n")):  # not splitlines(): a name may hold \x1c-\x1e, \x85 ...
        if line.startswith(EXE_MARK):
            return line[len(EXE_MARK):].strip() or None
    return None


__all__ = ["SlurmSubmitOptions", "SlurmPlanError", "parse_slurm_options", "sbatch_options", "job_dir",
           "try_names", "check_backend", "build_job_spec", "OUR_KEYS", "CLEANUP_CHOICES", "ImageCheck",
           "image_lines", "singularity_prepare_script", "parse_prepare_output", "LOCAL", "requested_resources",
           "with_resources"]
