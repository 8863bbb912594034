"""``stepcab build RECIPE [-r]``: build (or pull) every container image a recipe needs, in advance.

Like ``stimela build``: walks every cab step (nested recipes, unrolled loops), takes the backend
each step selects (``--backend`` overrides), collects the distinct images and, for each:

* ``singularity``: builds ``<image_dir>/<name>.simg`` with ``<exe> build <simg> docker://<image>``
  if it is missing (a prebuilt ``image.path`` must exist); ``-r`` rebuilds existing ones;
* ``podman``/``docker``: ``image exists``, else ``pull`` (``-r`` pulls again).

Native steps need nothing. Progress is shown as ``[i/n] image ... status`` lines; the exit status is
1 if any image failed. No Airflow import.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Any, Optional

EXIT_OK, EXIT_ERRORS = 0, 1


def _collect(result: Any, params: dict, backend: Optional[str], out: Any) -> tuple[list, int]:
    """``[(key, kind, plan, settings)]`` of distinct images, plus the number of planning errors."""
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
    errors = 0
    fs = LocalFs()
    for rs in resolve_recipe(result.recipe, tree, params, problems=problems):
        sp = plan_step(rs, tree, problems, backend=backend)
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
            print(f"stepcab build: step {sp.name}: {exc}", file=out)
            errors += 1
            continue
        seen.setdefault(key, (key, kind, plan, settings, sp.name))
    for p in problems.errors:
        print(str(p), file=out)
    return list(seen.values()), errors + len(problems.errors)


def cmd_build(args: argparse.Namespace) -> int:
    """Build the images of a recipe (see the module docstring)."""
    from .recipe.api import load_recipe_result
    from .recipe.errors import RecipeError
    from .runtime.containers import (ContainerError, engine_image_present, ensure_engine_image,
                                     ensure_singularity_image)

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
    images, errors = _collect(result, dict(args.param or []), args.backend, out)
    if not images:
        print(f"stepcab build: recipe '{result.recipe.name}' needs no container images", file=sys.stdout)
        return EXIT_ERRORS if errors else EXIT_OK
    total = len(images)
    for i, (key, kind, plan, settings, step) in enumerate(images, 1):
        label = f"[{i}/{total}] {kind} {plan.image.name}"
        verbose = args.verbose

        def log(level: int, text: str, _label: str = label) -> None:
            if verbose or level >= logging.WARNING:
                print(f"    {text}", file=sys.stdout, flush=True)

        start = time.monotonic()
        try:
            if kind == "singularity":
                present = plan.image.prebuilt or os.path.exists(plan.simg)
                if present and not args.rebuild:
                    print(f"{label}: present ({plan.simg})", flush=True)
                    continue
                print(f"{label}: {'rebuilding' if present else 'building'} {plan.simg} ...", flush=True)
                ensure_singularity_image(plan, log=log, auto_build=True, rebuild=args.rebuild)
            else:
                if engine_image_present(plan) and not args.rebuild:
                    print(f"{label}: present", flush=True)
                    continue
                print(f"{label}: pulling ...", flush=True)
                ensure_engine_image(plan, log=log, auto_pull=True, rebuild=args.rebuild)
        except ContainerError as exc:
            print(f"{label}: FAILED ({exc}) [step {step}]", flush=True)
            errors += 1
            continue
        print(f"{label}: done in {time.monotonic() - start:.1f}s", flush=True)
    return EXIT_ERRORS if errors else EXIT_OK


def add_build_parser(sub: Any, common: Any) -> None:
    """Register ``stepcab build`` on the CLI's subparsers."""
    from .cli import parse_param

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
