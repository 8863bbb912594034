"""A standalone shell script running a recipe's steps in order (``stepcab plan --script``). Pure.

Every cab step becomes one command — the same argv ``stepcab plan`` shows (native), or the
``singularity exec``/``podman run`` command lines of :mod:`.singularity`/:mod:`.podman` — with loops
unrolled and every argument quoted for ``/bin/sh``. The script ``cd``\\ s into the working
directory the container binds were planned for and stops at the first failing step (``set -e``).

* Singularity: the executable is chosen when the script runs (``$STEPCAB_SINGULARITY``, else
  ``apptainer``, else ``singularity``); a missing image is built first (``<exe> build``).
* Podman/Docker: ``$STEPCAB_PODMAN`` overrides the executable.
* Fresh temporary directories for ``/tmp`` and ephemeral binds are made with ``mktemp -d`` and
  removed after each step.
* Steps skipped at plan time, and values only known at run time (outputs of earlier steps,
  ``GLOB``...), are shown as comments; such steps run with the formula text as planned.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Mapping, Optional

from ..recipe.errors import Problems
from .images import images_section

_EPH = re.compile(r"::(EPH\d+)::")
BACKENDS = ("native", "singularity", "podman", "docker")


def _quote(arg: str) -> str:
    """Quote for sh, leaving ``::EPHn::`` placeholders as ``"$EPHn"`` expansions."""
    parts = _EPH.split(str(arg))
    if len(parts) == 1:
        return shlex.quote(arg)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f'"${{STEPCAB_{part}}}"')
        elif part:
            out.append(shlex.quote(part))
    return "".join(out)


def comment(text: Any) -> str:
    """``text`` made safe for a ``#`` comment line: control characters (a newline would end the
    comment and run the rest) become escapes such as ``\\n``."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def quote_argv(argv: Any) -> str:
    """One shell command line from ``argv``."""
    return " ".join(_quote(str(a)) for a in argv)


def _container_lines(rs: Any, sp: Any, tree: Any, backend_name: str, cwd: str, fs: Any) -> list:
    from ..recipe.backends import engine_options, parse_backend_options
    from .podman import container_name, podman_argv_for_step
    from .singularity import singularity_argv_for_step

    opts = parse_backend_options(sp.settings)
    cab = rs.step.cab
    env = {k: str(v) for k, v in (cab.management.environment or {}).items()}
    lines = []
    if backend_name == "singularity":
        plan = singularity_argv_for_step(cab, sp.params, sp.argv, backend=opts, cwd=cwd, fs=fs,
                                         executable="::EXE::", images=images_section(tree), extra_env=env)
        if plan.build_argv:
            lines.append(f"[ -e {shlex.quote(plan.simg)} ] || {{ mkdir -p {shlex.quote(plan.simg.rsplit('/', 1)[0])}"
                         f" && \"$STEPCAB_SINGULARITY\" {quote_argv(plan.build_argv[1:])}; }}")
        exe, clean = '"$STEPCAB_SINGULARITY"', opts.singularity.clean_tmp
    else:
        settings = engine_options(opts, backend_name)
        plan = podman_argv_for_step(cab, sp.params, sp.argv, backend=opts, settings=settings, cwd=cwd, fs=fs,
                                    name=container_name(sp.name), engine=backend_name, executable="::EXE::",
                                    uid_gid=None, images=images_section(tree), extra_env=env)
        exe, clean = '"$STEPCAB_PODMAN"', settings.clean_tmp
        if settings.user and str(settings.user).lower() == "auto":
            at = plan.argv.index("--workdir")
            plan.argv[at:at] = ["::USER::"]
    for path in plan.mkdirs:
        lines.append(f"mkdir -p {shlex.quote(path)}")
    for key, base in plan.ephemeral.items():
        lines.append(f"STEPCAB_{key}=$(mktemp -d -p {shlex.quote(base)})")
    cmd = quote_argv(plan.argv[1:]).replace("::USER::", '--user "$(id -u):$(id -g)"')
    cmd = exe + " " + cmd
    if plan.ephemeral and clean:
        rm = " ".join(f'"$STEPCAB_{k}"' for k in plan.ephemeral)
        lines.append(f"{cmd} || {{ rc=$?; rm -rf {rm}; exit $rc; }}")
        lines.append(f"rm -rf {rm}")
    else:
        lines.append(cmd)
    return lines


def _mkdir_lines(cab: Any, params: Mapping[str, Any]) -> list:
    """``mkdir -p`` for output parents (``mkdir_parent``) and ``mkdir: true`` directories, as before a run."""
    from .singularity import file_values

    dirs: list = []
    for name, p in {**cab.inputs, **cab.outputs}.items():
        dtype = getattr(p, "dtype", None)
        if name not in params or dtype is None or not dtype.is_file_type:
            continue
        for f in file_values(dtype, params[name]):
            if "://" in f or not f:
                continue
            if p.mkdir and dtype.kind in ("Directory", "MS", "List"):
                dirs.append(f)
            elif p.is_output and p.path_policies.mkdir_parent is not False and "/" in f.rstrip("/"):
                dirs.append(f.rstrip("/").rsplit("/", 1)[0] or "/")
    return [f"mkdir -p {' '.join(shlex.quote(d) for d in dict.fromkeys(dirs))}"] if dirs else []


def recipe_script(recipe: Any, config: Any, params: Optional[Mapping[str, Any]] = None, *,
                  backend: Optional[str] = None, cwd: str, fs: Any = None,
                  header: str = "") -> tuple[str, Problems]:
    """The shell script of ``recipe`` and the problems met while planning it.

    :param backend: ``native``, ``singularity``, ``podman`` or ``docker`` for every step (``None``:
        each step's own selection, where ``kube`` is not scriptable).
    :param cwd: the directory the script runs steps in (container binds are planned for it).
    :param fs: filesystem facts for container binds (:class:`.singularity.FsFacts`).
    """
    from ..recipe.resolve import CLI_LOC, resolve_recipe
    from .steps import plan_step

    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    tree = getattr(config, "tree", config)
    problems = Problems()
    locs = {k: CLI_LOC for k in (params or {})}
    lines = ["#!/bin/sh", f"# generated by stepcab plan --script: recipe '{comment(recipe.name)}'"
             + (f", backend {backend}" if backend else "")]
    if header:
        lines += [f"# {comment(h)}" for h in header.splitlines()]
    lines += ["set -e", f"cd {shlex.quote(cwd)}",
              'STEPCAB_SINGULARITY="${STEPCAB_SINGULARITY:-$(command -v apptainer || command -v singularity '
              '|| echo singularity)}"',
              'STEPCAB_PODMAN="${STEPCAB_PODMAN:-podman}"', ""]
    steps = resolve_recipe(recipe, tree, params, problems=problems, param_locs=locs)
    for n, rs in enumerate(steps, 1):
        sp = plan_step(rs, tree, problems, backend=backend)
        name = sp.backend or "?"
        lines.append(f"# {n}. {comment(sp.name)} (cab {comment(sp.cab)}, backend {comment(name)})")
        if sp.skip is True:
            lines += ["# skipped (skip: true)", ""]
            continue
        for pname, reason in sp.unresolved.items():
            lines.append(f"# unresolved at plan time: {comment(pname)}: {comment(reason)}")
        if sp.error or sp.argv is None:
            lines += [f"echo {shlex.quote(f'stepcab: step {sp.name}: {sp.error}')} >&2", "exit 1", ""]
            continue
        lines.append(f"echo {shlex.quote(f'==> {sp.name}')} >&2")
        lines += _mkdir_lines(rs.step.cab, sp.params)
        if name == "native":
            lines.append(quote_argv(sp.argv))
        elif name in ("singularity", "podman", "docker"):
            try:
                lines += _container_lines(rs, sp, tree, name, cwd, fs)
            except ValueError as exc:
                problems.error(rs.step.loc, sp.name, str(exc), "container-plan")
                lines += [f"echo {shlex.quote(f'stepcab: step {sp.name}: {exc}')} >&2", "exit 1"]
        else:
            lines += [f"echo {shlex.quote(f'stepcab: backend {name} cannot run from a script')} >&2", "exit 1"]
        lines.append("")
    return "\n".join(lines) + "\n", problems


__all__ = ["recipe_script", "quote_argv", "BACKENDS"]
