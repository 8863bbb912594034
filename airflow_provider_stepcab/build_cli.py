"""``stepcab build RECIPE [-r]``: build (or pull) every container image a recipe needs, in advance.

Like ``stimela build``: walks every cab step (nested recipes, unrolled loops), takes the backend
each step selects (``--backend`` overrides), collects the distinct images and, for each:

* ``singularity``: builds ``<image_dir>/<name>.simg`` with ``<exe> build <simg> docker://<image>``
  if it is missing (a prebuilt ``image.path`` must exist); ``-r`` rebuilds existing ones;
* ``podman``/``docker``: ``image exists``, else ``pull`` (``-r`` pulls again).

Native steps need nothing. Progress is shown as ``[i/n] image ... status`` lines; the exit status is
1 if any image failed. No Airflow import.

:mod:`~airflow_provider_stepcab.runtime.image_builds` does the work, shared with the DAG's optional
first task (:class:`~airflow_provider_stepcab.operators.build.StepcabBuildImagesOperator`,
``opts.airflow.build_images``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

EXIT_OK, EXIT_ERRORS = 0, 1


def cmd_build(args: argparse.Namespace) -> int:
    """Build the images of a recipe (see the module docstring)."""
    from .recipe.api import load_recipe_result
    from .recipe.errors import RecipeError
    from .runtime.image_builds import build_images, collect_images, failed

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
