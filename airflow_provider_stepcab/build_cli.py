"""``stepcab build RECIPE [-r]``: build (or pull) every container image a recipe needs, in advance.

Like ``stimela build``: walks every cab step (nested recipes, unrolled loops), takes the backend
each step selects (``--backend`` overrides), collects the distinct images and, for each:

* ``singularity``: builds ``<image_dir>/<name>.simg`` with ``<exe> build <simg> docker://<image>``
  if it is missing (a prebuilt ``image.path`` must exist); ``-r`` rebuilds existing ones;
* ``podman``/``docker``: ``image exists``, else ``pull`` (``-r`` pulls again).

Native steps need nothing. Progress is shown as ``[i/n] image ... status`` lines; the exit status is
1 if any image failed. No Airflow import.

:func:`collect_images` and :func:`build_images` are also what the DAG's optional first task
(:class:`~airflow_provider_stepcab.operators.build.StepcabBuildImagesOperator`,
``opts.airflow.build_images``) runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Any, Callable, NamedTuple, Optional

EXIT_OK, EXIT_ERRORS = 0, 1

#: ``say(text)``: one progress line
SayFn = Callable[[str], None]
#: ``log(level, text)``: one line of build/pull output
LogFn = Callable[[int, str], None]


class ImageNeed(NamedTuple):
    """One distinct image a recipe needs."""

    key: str           # the ``.simg`` path (singularity) or ``<engine>:<image>``
    kind: str          # singularity, podman or docker
    plan: Any          # SingularityPlan / PodmanPlan of the first step needing it
    settings: Any      # the backend section's options
    step: str          # fqname of that step


def collect_images(result: Any, params: dict, backend: Any = None, *, say: SayFn,
                   wanted: Optional[Callable[[Any], bool]] = None) -> tuple[list, list]:
    """The distinct images the cab steps of a loaded recipe need, on the backend each step selects.

    :param result: a :class:`~.recipe.api.LoadResult` with a recipe.
    :param params: recipe inputs (or ``label.param`` values).
    :param backend: override layer for every step (a name, ``select`` list or backend mapping), or
        ``callable(step_path) -> override`` for per-step overrides.
    :param say: receives one line per problem found.
    :param wanted: ``callable(resolved_step) -> bool``; steps it rejects need nothing.
    :returns: ``([ImageNeed, ...], [error message, ...])``; a step whose image cannot be planned
        (no runtime executable, bad image) is an error.
    """
    from .plan.images import images_section
    from .plan.podman import podman_argv_for_step
    from .plan.singularity import singularity_argv_for_step
    from .plan.steps import plan_step
    from .recipe.backends import engine_options, parse_backend_options
    from .recipe.errors import Problems
    from .recipe.resolve import resolve_recipe
    from .runtime.containers import LocalFs, RuntimeMissing, find_engine, find_singularity

    tree = result.config.tree
    problems = Problems()
    seen: dict = {}
    errors: list = []
    fs = LocalFs()
    for rs in resolve_recipe(result.recipe, tree, params, problems=problems):
        if wanted is not None and not wanted(rs):
            continue
        override = backend(tuple(rs.path)) if callable(backend) else backend
        sp = plan_step(rs, tree, problems, backend=override or None)
        kind = sp.backend
        if kind not in ("singularity", "podman", "docker"):
            continue
        opts = parse_backend_options(sp.settings)
        # only the image matters here: binds are planned (and checked) when a step runs
        opts = dataclasses.replace(opts, singularity=dataclasses.replace(opts.singularity, bind_dirs={}))
        try:
            if kind == "singularity":
                exe = find_singularity(opts.singularity.executable)
                plan = singularity_argv_for_step(rs.step.cab, {}, [], backend=opts, cwd=".", fs=fs, executable=exe,
                                                 images=images_section(tree))
                key, settings = plan.simg, opts.singularity
            else:
                settings = dataclasses.replace(engine_options(opts, kind), bind_dirs={})
                exe = find_engine(kind, settings.executable)
                plan = podman_argv_for_step(rs.step.cab, {}, [], backend=opts, settings=settings, cwd=".", fs=fs,
                                            name="build", engine=kind, executable=exe)
                key = f"{kind}:{plan.image.name}"
        except (ValueError, RuntimeMissing) as exc:
            errors.append(f"step {sp.name}: {exc}")
            say(f"stepcab build: step {sp.name}: {exc}")
            continue
        seen.setdefault(key, ImageNeed(key, kind, plan, settings, sp.name))
    for p in problems.errors:
        errors.append(str(p))
        say(str(p))
    return list(seen.values()), errors


def build_images(images: list, *, rebuild: bool = False, say: SayFn, log: LogFn) -> dict:
    """Build (singularity) or pull (podman/docker) each missing image; present ones are skipped.

    :param images: from :func:`collect_images`.
    :param rebuild: rebuild/pull images that are already present (``stepcab build -r``).
    :param say: receives the ``[i/n] <backend> <image>: ...`` progress lines.
    :param log: receives the build/pull commands and their output.
    :returns: ``{"<backend> <image>": "present" | "built" | "pulled" | "FAILED: <reason> [step <name>]"}``.
    """
    from .runtime.containers import ContainerError, engine_image_present, ensure_engine_image, ensure_singularity_image

    status: dict = {}
    total = len(images)
    for i, need in enumerate(images, 1):
        name = f"{need.kind} {need.plan.image.name}"
        label = f"[{i}/{total}] {name}"
        start = time.monotonic()
        try:
            if need.kind == "singularity":
                present = need.plan.image.prebuilt or os.path.exists(need.plan.simg)
                if present and not rebuild:
                    say(f"{label}: present ({need.plan.simg})")
                    status[name] = "present"
                    continue
                say(f"{label}: {'rebuilding' if present else 'building'} {need.plan.simg} ...")
                ensure_singularity_image(need.plan, log=log, auto_build=True, rebuild=rebuild)
                status[name] = "built"
            else:
                if engine_image_present(need.plan) and not rebuild:
                    say(f"{label}: present")
                    status[name] = "present"
                    continue
                say(f"{label}: pulling ...")
                ensure_engine_image(need.plan, log=log, auto_pull=True, rebuild=rebuild)
                status[name] = "pulled"
        except ContainerError as exc:
            say(f"{label}: FAILED ({exc}) [step {need.step}]")
            status[name] = f"FAILED: {exc} [step {need.step}]"
            continue
        say(f"{label}: done in {time.monotonic() - start:.1f}s")
    return status


def failed(status: dict) -> dict:
    """The failed entries of a :func:`build_images` result."""
    return {k: v for k, v in status.items() if v.startswith("FAILED")}


def cmd_build(args: argparse.Namespace) -> int:
    """Build the images of a recipe (see the module docstring)."""
    from .recipe.api import load_recipe_result
    from .recipe.errors import RecipeError

    out = sys.stderr
    try:
        result = load_recipe_result(args.files, args.recipe, strict=False, include_dirs=args.include or ())
    except RecipeError as exc:
        for p in exc.problems:
            print(str(p), file=out)
        return EXIT_ERRORS
    if result.recipe is None or result.problems.errors:
        for p in result.problems.errors:
            print(str(p), file=out)
        return EXIT_ERRORS
    images, errors = collect_images(result, dict(args.param or []), args.backend,
                                    say=lambda text: print(text, file=out))
    if not images:
        print(f"stepcab build: recipe '{result.recipe.name}' needs no container images", file=sys.stdout)
        return EXIT_ERRORS if errors else EXIT_OK
    verbose = args.verbose

    def log(level: int, text: str) -> None:
        if verbose or level >= logging.WARNING:
            print(f"    {text}", file=sys.stdout, flush=True)

    status = build_images(images, rebuild=args.rebuild, say=lambda text: print(text, flush=True), log=log)
    return EXIT_ERRORS if errors or failed(status) else EXIT_OK


def add_build_parser(sub: Any, common: Any, parse_param: Callable[[str], tuple]) -> None:
    """Register ``stepcab build`` on the CLI's subparsers.

    :param common: adds the options every subcommand has.
    :param parse_param: the ``-p NAME=VALUE`` argument type (:func:`.cli.parse_param`).
    """
    p = sub.add_parser("build", help="build/pull the container images a recipe needs")
    p.add_argument("files", nargs="+", metavar="FILE", help="recipe file(s), merged in order")
    p.add_argument("--recipe", metavar="NAME", help="recipe (default: DEFAULT, or the only one)")
    p.add_argument("-r", "--rebuild", action="store_true", help="rebuild/pull images that are already present")
    p.add_argument("-b", "--backend", metavar="B", help="backend override, e.g. singularity or podman")
    p.add_argument("-p", "--param", action="append", type=parse_param, metavar="NAME=VALUE",
                   help="recipe input or step.param; VALUE is read as YAML")
    p.add_argument("-v", "--verbose", action="store_true", help="show the build output")
    common(p)
    p.set_defaults(func=cmd_build)
