"""Building (Singularity) or pulling (Podman/Docker) the container images a recipe needs.

What ``stepcab build`` (:mod:`~airflow_provider_stepcab.build_cli`) and the DAG's optional first
task (:class:`~airflow_provider_stepcab.operators.build.StepcabBuildImagesOperator`,
``opts.airflow.build_images``) both run: :func:`collect_images` walks every cab step (nested
recipes, unrolled loops) on the backend it selects and collects the distinct images;
:func:`build_images` builds ``<image_dir>/<name>.simg`` for Singularity, or pulls for
Podman/Docker, each missing image. No Airflow import.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, NamedTuple, Optional

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

    :param result: a :class:`~airflow_provider_stepcab.recipe.api.LoadResult` with a recipe.
    :param params: recipe inputs (or ``label.param`` values).
    :param backend: override layer for every step (a name, ``select`` list or backend mapping), or
        ``callable(step_path) -> override`` for per-step overrides.
    :param say: receives one line per problem found.
    :param wanted: ``callable(resolved_step) -> bool``; steps it rejects need nothing.
    :returns: ``([ImageNeed, ...], [error message, ...])``; a step whose image cannot be planned
        (no runtime executable, bad image) is an error.
    """
    from ..plan.images import images_section
    from ..plan.podman import podman_argv_for_step
    from ..plan.singularity import singularity_argv_for_step
    from ..plan.steps import plan_step
    from ..recipe.backends import engine_options, parse_backend_options
    from ..recipe.errors import Problems
    from ..recipe.resolve import resolve_recipe
    from .containers import LocalFs, RuntimeMissing, find_engine, find_singularity

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
    from .containers import (
        ContainerError,
        engine_image_present,
        ensure_engine_image,
        ensure_singularity_image,
    )

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


