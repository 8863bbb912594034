"""Slurm batch scripts for a step: pure data, no I/O.

A step's argv (native or singularity plan) is wrapped in an ``sbatch`` script
that keeps its own books in a per-task remote directory, so the submitter can
tell what happened even when Slurm has forgotten the job:

``started``       written when the job starts (date, host, job id)
``status.json``   ``{"state": ..., "job_id": ..., "host": ..., "time": ..., "exit_code": ...}``
                  replaced atomically at every change (``running``, ``terminating``, ``finished``)
``exitcode``      the command's exit code, written atomically (tmp + mv) from ``trap EXIT``
``stdout.log`` / ``stderr.log``  the job's output streams

``TERM`` (scancel, or the time limit with ``--signal``) is trapped: the state
``terminating`` is recorded and the command's process group is signalled, so
TIMEOUT and cancellations leave a trace. The exit-code file decides success;
Slurm's accounting only explains deaths the wrapper could not record.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

STARTED = "started"
STATUS = "status.json"
EXITCODE = "exitcode"
STDOUT = "stdout.log"
STDERR = "stderr.log"
SCRIPT = "job.sbatch"

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_OPT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
MAX_JOB_NAME = 120
#: mktemp name template of the compute-node directories behind ephemeral binds (8 random chars)
MKTEMP_TEMPLATE = "stepcab-eph." + "X" * 8


def job_name(dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
    """A deterministic, Slurm-safe job name for one task try.

    The same identity always gives the same name (so a retried or restarted worker
    can find its job); a short hash keeps names unique after sanitising and truncation.
    """
    ident = f"{dag_id}\x1f{run_id}\x1f{task_id}\x1f{map_index}\x1f{try_number}"
    digest = hashlib.sha1(ident.encode()).hexdigest()[:10]
    readable = _SAFE.sub("_", f"{dag_id}.{task_id}")
    if map_index >= 0:
        readable += f".{map_index}"
    readable += f".t{try_number}"
    room = MAX_JOB_NAME - len(digest) - 1
    return f"sc-{readable[: room - 3]}-{digest}"


@dataclass(frozen=True)
class SlurmJobSpec:
    """Everything needed to write one batch script.

    :param job_name: the Slurm job name (see :func:`job_name`).
    :param job_dir: the per-task remote directory for status files and logs.
    :param argv: the command to run, already planned (native or singularity).
    :param workdir: directory the command runs in (defaults to ``job_dir``).
    :param sbatch_options: ``#SBATCH`` options, e.g. ``{"mem": "8G", "cpus-per-task": 4}``;
        ``True`` gives a bare flag, ``False``/``None`` omits the option.
    :param remote_dependencies: shell lines run before the command (``module load apptainer``).
    :param env: environment variables exported before the command.
    :param term_grace: seconds between TERM to the command's group and KILL.
    :param setup: shell lines run after ``remote_dependencies`` (e.g. creating bind sources or
        building a container image); a failing line should ``exit`` itself.
    :param ephemeral: temporary directories made on the compute node just before the command, as
        Stimela's ``slurm_runner.sh`` does: ``{"EPH0": "/tmp"}`` runs ``mktemp -d`` in ``/tmp`` and
        replaces ``::EPH0::`` in every argument (see :mod:`.singularity`).
    :param clean_ephemeral: remove those directories when the job ends.
    """

    job_name: str
    job_dir: str
    argv: Sequence[str]
    workdir: str | None = None
    sbatch_options: Mapping[str, object] = field(default_factory=dict)
    remote_dependencies: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    term_grace: int = 10
    setup: Sequence[str] = ()
    ephemeral: Mapping[str, str] = field(default_factory=dict)
    clean_ephemeral: bool = True


def job_file(job_dir: str, name: str) -> str:
    """Path of one of the wrapper's files inside ``job_dir``."""
    return f"{job_dir.rstrip('/')}/{name}"


#: characters that make sbatch read an ``#SBATCH`` value as more than one word (it splits the line
#: at whitespace and reads quotes, backslashes and ``#``): such a value is written double-quoted
_DIRECTIVE_SPECIAL = re.compile(r"[\s\"'\\#]")


def directive_value(key: str, value: object) -> str:
    """``value`` as the value of one ``#SBATCH`` option: as it is when plain, else double-quoted
    with ``\\`` and ``"`` escaped (sbatch reads that back as one value, so a space cannot add an
    option of its own). Control characters are refused: a newline would end the ``#`` line and
    run the rest in the job's shell.

    :raises ValueError: naming ``key``.
    """
    text = str(value)
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        what = "a newline" if bad == "\n" else repr(bad)
        raise ValueError(f"sbatch option {key!r}: value {text!r} has {what} (control characters cannot "
                         "go into an #SBATCH line)")
    if not _DIRECTIVE_SPECIAL.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_directives(spec: SlurmJobSpec) -> list[str]:
    """The ``#SBATCH`` lines: ours first (name, output files), then the user's options."""
    where = "output/error (backend.slurm.remote_dir)"
    lines = [
        f"#SBATCH --job-name={directive_value('job-name', spec.job_name)}",
        f"#SBATCH --output={directive_value(where, job_file(spec.job_dir, STDOUT))}",
        f"#SBATCH --error={directive_value(where, job_file(spec.job_dir, STDERR))}",
    ]
    reserved = {"job-name", "J", "output", "o", "error", "e", "parsable"}
    for key, value in spec.sbatch_options.items():
        name = str(key)
        if not _OPT_NAME.match(name):
            raise ValueError(f"invalid sbatch option name {name!r}")
        if name in reserved:
            raise ValueError(f"sbatch option {name!r} is set by stepcab and cannot be overridden")
        if value is None or value is False:
            continue
        flag = f"-{name}" if len(name) == 1 else f"--{name}"
        if value is True:
            lines.append(f"#SBATCH {flag}")
        else:
            text = directive_value(name, value)
            sep = " " if len(name) == 1 else "="
            lines.append(f"#SBATCH {flag}{sep}{text}")
    if "signal" not in spec.sbatch_options:
        # TERM to the batch shell 30 s before the time limit, so a TIMEOUT is recorded.
        lines.append("#SBATCH --signal=B:TERM@30")
    return lines


_BODY = r"""
set -u
STEPCAB_JOB_DIR=__JOB_DIR__
export STEPCAB_JOB_DIR
_sc_host=$(hostname 2>/dev/null || echo unknown)
_sc_child=
_sc_state=running
_sc_status() {  # _sc_status STATE [EXIT_CODE]
  local now; now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  printf '{"state": "%s", "job_id": "%s", "host": "%s", "time": "%s", "exit_code": %s}\n' \
    "$1" "${SLURM_JOB_ID:-}" "$_sc_host" "$now" "${2:-null}" > "$STEPCAB_JOB_DIR/status.json.tmp.$$" \
    && mv -f "$STEPCAB_JOB_DIR/status.json.tmp.$$" "$STEPCAB_JOB_DIR/status.json"
}
_sc_tmpdirs=()
_sc_exit() {
  local rc=$?
  trap - EXIT TERM
  [ "${#_sc_tmpdirs[@]}" -eq 0 ] || rm -rf -- "${_sc_tmpdirs[@]}" 2>/dev/null
  printf '%s\n' "$rc" > "$STEPCAB_JOB_DIR/exitcode.tmp.$$" && mv -f "$STEPCAB_JOB_DIR/exitcode.tmp.$$" "$STEPCAB_JOB_DIR/exitcode"
  _sc_status finished "$rc"
  exit "$rc"
}
_sc_running() {  # a zombie waiting to be reaped no longer runs
  kill -0 "$1" 2>/dev/null || return 1
  ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"
}
_sc_term() {
  _sc_status terminating
  if [ -n "$_sc_child" ]; then
    kill -TERM -- "-$_sc_child" 2>/dev/null || kill -TERM "$_sc_child" 2>/dev/null
    local n=0
    while _sc_running "$_sc_child" && [ "$n" -lt __GRACE10__ ]; do sleep 0.1; n=$((n + 1)); done
    kill -KILL -- "-$_sc_child" 2>/dev/null || true
  fi
  exit 143
}
trap _sc_exit EXIT
trap _sc_term TERM
mkdir -p "$STEPCAB_JOB_DIR"
printf 'start=%s host=%s job_id=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$_sc_host" "${SLURM_JOB_ID:-}" \
  > "$STEPCAB_JOB_DIR/started"
_sc_status running
"""


def build_sbatch_script(spec: SlurmJobSpec) -> str:
    """Return the complete batch script text for ``spec``."""
    if not spec.argv:
        raise ValueError("a Slurm job needs a command (empty argv)")
    q = shlex.quote
    parts = ["#!/bin/bash", *sbatch_directives(spec)]
    parts.append(_BODY.replace("__JOB_DIR__", q(spec.job_dir)).replace("__GRACE10__", str(int(spec.term_grace) * 10)))
    for key, value in spec.env.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
            raise ValueError(f"invalid environment variable name {key!r}")
        parts.append(f"export {key}={q(str(value))}")
    parts.append(f"cd {q(spec.workdir or spec.job_dir)} || exit 125")
    if spec.remote_dependencies:
        parts.append("# remote_dependencies (run before the command)")
        parts.extend(str(line) for line in spec.remote_dependencies)
    if spec.setup:
        parts.append("# setup (run before the command)")
        parts.extend(str(line) for line in spec.setup)
    command = " ".join(q(str(a)) for a in spec.argv)
    if spec.ephemeral:
        parts.extend(_ephemeral_lines(spec))
        command = '"${_sc_argv[@]}"'
    # setsid gives the command its own process group, so TERM reaches all of it;
    # waiting in the background lets the TERM trap run while the command works.
    parts.append(f"setsid {command} &")
    parts.append("_sc_child=$!")
    parts.append('wait "$_sc_child"')
    parts.append("exit $?")
    return "\n".join(parts) + "\n"


def _ephemeral_lines(spec: SlurmJobSpec) -> list[str]:
    """``mktemp -d`` per placeholder on the compute node, then ``::EPHn::`` → path in the argv."""
    q = shlex.quote
    lines = ["# ephemeral directories, made on the compute node (Stimela's slurm_runner.sh)",
             "_sc_argv=(" + " ".join(q(str(a)) for a in spec.argv) + ")"]
    for i, (key, base) in enumerate(spec.ephemeral.items()):
        if not re.match(r"^[A-Za-z0-9_]+$", str(key)):
            raise ValueError(f"invalid ephemeral placeholder name {key!r}")
        var = f"_sc_eph{i}"
        lines.append(f"{var}=$(mktemp -d -p {q(str(base))} {MKTEMP_TEMPLATE}) || exit 125")
        if spec.clean_ephemeral:
            lines.append(f'_sc_tmpdirs+=("${var}")')
        # a quoted replacement is taken literally (bash 5.2 patsub_replacement)
        lines.append(f'_sc_argv=("${{_sc_argv[@]//::{key}::/"${var}"}}")')
    return lines
