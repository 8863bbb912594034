"""``stepcab run``'s command line: the options (Stimela 2.1.4's plus ours, :func:`parser`),
``NAME=VALUE`` parameters and parameter files, ``-c``/``-C`` config settings, the recipe file and
recipe to run, the step selection, and the DAG run conf they make (:func:`build_conf`).

Nothing here imports Airflow; :mod:`.run_cli` runs what this reads.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_HOME = os.path.join(".stepcab", "airflow")
YAML_EXTENSIONS = (".yml", ".yaml")
BACKEND_FLAGS = (("native", "native"), ("singularity", "singularity"), ("kube", "kube"))


class UsageError(Exception):
    """A bad command line or recipe (exit code 2)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepcab run", description="Run a recipe through Airflow (dag.test), "
                                "with stimela run's arguments.")
    add = p.add_argument
    add("parameters", nargs="*", metavar="FILE.yml ... [RECIPE] [PARAM=VALUE]",
        help="recipe/config files (merged in order), the recipe name, parameter assignments")
    add("-s", "--step", dest="steps", action="append", default=[], metavar="STEP(s)",
        help="only run these steps (commas, repeats, BEGIN:END ranges, sub.step); a single step is also unskipped")
    add("-k", "--skip-step", dest="skip_steps", action="append", default=[], metavar="STEP(s)",
        help="skip these steps (commas, repeats, ranges)")
    add("-t", "--tags", dest="tags", action="append", default=[], metavar="TAG(s)",
        help="only run steps with these tags (and steps tagged 'always')")
    add("--skip-tags", dest="skip_tags", action="append", default=[], metavar="TAG(s)", help="skip steps with these tags")
    add("-e", "--enable-step", dest="enable_steps", action="append", default=[], metavar="STEP(s)",
        help="run these steps even if the recipe skips them")
    add("-f", "--disable-fresh-skips", action="store_true", help="ignore skip_if_outputs: fresh")
    add("-F", "--disable-exist-skips", action="store_true", help="ignore skip_if_outputs: exist")
    add("-c", "--config", dest="config_equals", action="append", default=[], metavar="X.Y.Z=VALUE",
        help="set a config or recipe setting")
    add("-C", "--config-assign", action="append", nargs=2, default=[], metavar=("X.Y.Z", "VALUE"),
        help="same as -c X.Y.Z=VALUE")
    add("-a", "--assign", action="append", nargs=2, default=[], metavar=("PARAM", "VALUE"),
        help="same as PARAM=VALUE")
    add("-l", "--last-recipe", action="store_true", help="run the last recipe of the files")
    add("-d", "--dry-run", action="store_true", help="only print the selected steps")
    add("-p", "--param", "--profile", dest="p", action="append", default=[], metavar="NAME=VALUE|DEPTH",
        help="NAME=VALUE sets a parameter (VALUE is YAML); an integer is the profiling depth (0: off)")
    add("-N", "--native", action="store_true", help="select the native backend (opts.backend.select=native)")
    add("-S", "--singularity", action="store_true", help="select the singularity backend")
    add("-K", "--kube", action="store_true", help="select the kube backend")
    add("--slurm", action="store_true", help="enable the slurm wrapper (opts.backend.slurm.enable=true)")
    add("-pf", "--parameter-file", action="append", default=[], metavar="FILE.yml",
        help="parameter values from a YAML file (below PARAM=VALUE)")
    add("-r", "--recipe", dest="recipe_name", help="recipe in the files (as the RECIPE argument)")
    add("-b", "--backend", help="backend for every step whatever the recipe says, e.g. native")
    add("--conf", help="trigger-time conf as JSON text or @file.json")
    add("--airflow-home", help=f"embedded Airflow home (default ./{DEFAULT_HOME})")
    add("--workdir", help="working directory of the run (default: the current directory)")
    # --- the step cache (docs/cache.md): conf stepcab_cache
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", dest="cache", action="store_const", const="on",
                       help="skip every step whose inputs, command and image are unchanged (step cache)")
    cache.add_argument("--no-cache", dest="cache", action="store_const", const="off",
                       help="neither use nor write step cache records")
    cache.add_argument("--refresh", dest="cache", action="store_const", const="refresh",
                       help="run every step and write new step cache records")
    return p


# --------------------------------------------------------------------------- command line → inputs

def _yaml_value(text: str) -> Any:
    import yaml

    if text == "=UNSET":
        return None  # Stimela's UNSET: the recipe's own value
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def _is_file(token: str) -> bool:
    return token.lower().endswith(YAML_EXTENSIONS) or "/" in token or os.path.isfile(token)


def split_parameters(tokens: Sequence[str]) -> tuple[list, str | None, dict]:
    """Positional arguments → (files, recipe name, params), as ``stimela run`` reads them.

    :raises UsageError: two recipe names, a missing file.
    """
    files, name, params = [], None, {}
    for token in tokens:
        if "=" in token:
            key, value = token.split("=", 1)
            if not key:
                raise UsageError(f"{token!r}: expected NAME=VALUE")
            params[key] = _yaml_value(value)
        elif _is_file(token):
            if not os.path.isfile(token):
                raise UsageError(f"{token}: no such file")
            files.append(os.path.abspath(token))
        elif name is not None:
            raise UsageError(f"multiple recipe names given ({name!r}, {token!r})")
        else:
            name = token
    return files, name, params


def _flatten(tree: Any, prefix: str = "") -> dict:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def collect_params(args: argparse.Namespace, positional: dict) -> tuple[dict, int | None]:
    """Parameter values (files < -a < PARAM=VALUE < -p) and the ``-p DEPTH`` profiling depth."""
    import yaml

    params: dict = {}
    for path in args.parameter_file:
        try:
            params.update(_flatten(yaml.safe_load(Path(path).read_text()) or {}))
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"-pf {path}: {exc}") from None
    params.update({key: _yaml_value(value) for key, value in args.assign})
    params.update(positional)
    depth = None
    for item in args.p:
        name, sep, value = item.partition("=")
        if sep and name.strip():
            params[name.strip()] = _yaml_value(value)
        elif item.strip().lstrip("-").isdigit():
            depth = int(item)
        else:
            raise UsageError(f"-p {item!r}: expected NAME=VALUE (a parameter) or DEPTH (profiling)")
    return params, depth


def config_settings(args: argparse.Namespace) -> dict:
    """``-c``/``-C``/``-N``/``-S``/``-K``/``--slurm``/``-f``/``-F`` as a nested config tree (later wins)."""
    tree: dict = {}

    def put(dotted: str, value: Any) -> None:
        keys = dotted.split(".")
        if not all(keys):
            raise UsageError(f"-c {dotted}: expected X.Y.Z=VALUE")
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UsageError(f"-c {dotted}: {key} is already set to a value")
        node[keys[-1]] = value

    for item in args.config_equals:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"-c {item!r}: expected X.Y.Z=VALUE")
        put(key.strip(), _yaml_value(value))
    for key, value in args.config_assign:
        put(key.strip(), _yaml_value(value))
    for flag, backend in BACKEND_FLAGS:
        if getattr(args, flag):
            put("opts.backend.select", backend)
            break
    if args.slurm:
        put("opts.backend.slurm.enable", True)
    if args.disable_fresh_skips:  # Stimela sets the same config settings
        put("opts.disable_skips.fresh", True)
    if args.disable_exist_skips:
        put("opts.disable_skips.exist", True)
    return tree


def read_conf(conf_text: str | None) -> dict:
    """``--conf`` JSON text or ``@file.json``."""
    if not conf_text:
        return {}
    text = conf_text
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"--conf {conf_text}: {exc}") from None
    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--conf: not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise UsageError("--conf: expected a JSON object")
    return conf


def build_conf(*, params: dict, backend: str | None, conf: dict, workdir: str,
               selection_conf: dict | None = None) -> dict:
    """The DAG run conf: ``--conf``, then parameters, ``-b`` and the step selection on top."""
    conf = dict(conf)
    for name, value in params.items():
        if value is None:
            conf.pop(name, None)
        else:
            conf[name] = value
    if backend:
        conf.setdefault("steps", {}).setdefault("*", {}).setdefault("backend", {})["select"] = backend
    conf.update(selection_conf or {})
    conf.setdefault("stepcab_workdir", os.path.abspath(workdir))
    return conf


# --------------------------------------------------------------------------- recipe file and choice

def recipe_file_for(files: list, settings: dict, home: Path) -> str:
    """The one file the DAG's tasks load: the given file, or a generated one that includes every
    given file and then sets ``settings`` (``-c`` & co.). Recipe settings ``lib.recipes.R.x`` are
    written as ``R.x`` so that they merge over the recipe's own definition."""
    if len(files) == 1 and not settings:
        return files[0]
    import yaml

    settings = dict(settings)
    recipes = (settings.get("lib") or {}).pop("recipes", None) or {}
    if "lib" in settings and not settings["lib"]:
        settings.pop("lib")
    body = {"_include": list(files), **settings, **recipes}
    text = "# generated by `stepcab run`: the files given on its command line, then -c/-C/-N... settings\n"
    text += yaml.safe_dump(body, sort_keys=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = home / "recipes" / digest / os.path.basename(files[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def choose_recipe_name(config: Any, name: str | None, *, last: bool) -> str:
    """Stimela's rule: the name given, else ``DEFAULT`` (unless ``-l``), else with ``-l`` the last
    recipe of the files, else the only recipe.

    :raises UsageError: naming the recipes to choose from.
    """
    names = list(getattr(config, "recipe_names", None) or [])
    lib = ((getattr(config, "tree", None) or {}).get("lib") or {}).get("recipes") or {}
    listing = ", ".join(names) or "(none)"
    if name is not None:
        if name not in lib:
            raise UsageError(f"'{name}' is not a recipe of the given files (recipes: {listing})")
        return name
    default = getattr(config, "default", None)
    if default and not last:
        if default not in lib:
            raise UsageError(f"DEFAULT recipe '{default}' not found (recipes: {listing})")
        return default
    if last and names:
        return names[-1]
    if len(names) == 1:
        return names[0]
    if last or not names:
        raise UsageError("no recipes found in the given files")
    raise UsageError(f"several recipes and no DEFAULT: name one of {listing} (or -l for the last)")


def load(recipe_file: str, name: str | None, *, last: bool) -> Any:
    """Load the recipe (before starting Airflow); returns the load result.

    :raises UsageError: the files do not load or hold no such recipe.
    """
    from airflow_provider_stepcab.recipe.api import _load_config, load_recipe_result
    from airflow_provider_stepcab.recipe.errors import RecipeError

    try:
        chosen = choose_recipe_name(_load_config([recipe_file], False, ()), name, last=last)
        result = load_recipe_result(recipe_file, chosen)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    for problem in result.problems.warnings:
        print(f"warning: {problem}", file=sys.stderr)
    if result.recipe is None or result.problems.errors:
        raise UsageError("\n".join(str(p) for p in result.problems.errors) or f"{recipe_file}: no recipe")
    return result


def with_layout_defaults(settings: dict, recipe: Any, params: dict) -> dict:
    """``settings`` plus recipe defaults for the given inputs that lay out the DAG (the values of
    an unrolled ``for_loop``, :func:`~.dag_factory.unrolling.fixed_inputs`): the DAG this run
    parses then has the shape of the values given, as a DAG run can't change it. Unchanged when no
    such input is given another literal value (a formula-looking value stays data for the run conf,
    which then refuses it, saying why)."""
    from airflow_provider_stepcab.dag_factory.unrolling import fixed_inputs
    from airflow_provider_stepcab.recipe.deferred import contains_deferred

    fixed = fixed_inputs(recipe)
    given = {k: v for k, v in params.items()
             if k in fixed and v is not None and not contains_deferred(v) and v != fixed[k]}
    if not given:
        return settings
    out = copy.deepcopy(settings)
    out.setdefault("lib", {}).setdefault("recipes", {}).setdefault(recipe.name, {}).setdefault(
        "defaults", {}).update(given)
    return out


# --------------------------------------------------------------------------- step selection

def selection_of(args: argparse.Namespace) -> Any:
    from airflow_provider_stepcab.recipe.selection import Selection

    return Selection(steps=tuple(args.steps), skip_steps=tuple(args.skip_steps), tags=tuple(args.tags),
                     skip_tags=tuple(args.skip_tags), enable_steps=tuple(args.enable_steps))


def selection_conf(args: argparse.Namespace) -> dict:
    """The step selection options as the run conf's lists: each task's operator applies them with
    the same rules (:mod:`.recipe.selection`, through :mod:`.operators.overrides`)."""
    lists = {"select": args.steps, "skip_steps": args.skip_steps, "tags": args.tags,
             "skip_tags": args.skip_tags, "enable_steps": args.enable_steps}
    return {key: list(value) for key, value in lists.items() if value}


def describe_selection(recipe_name: str, choice: Any) -> list:
    """Stimela's selection report: enabled / disabled / unskipped steps of each (sub)recipe."""
    lines = []
    parents = [()] + [p for p in choice.order if choice.children(p)]
    for parent in parents:
        kids = choice.children(parent)
        if parent and not choice.enabled[parent]:
            continue
        where = ".".join((recipe_name,) + parent)
        on = [p[-1] for p in kids if choice.enabled[p]]
        off = [p[-1] for p in kids if not choice.enabled[p]]
        unskipped = [p[-1] for p in kids if p in choice.unskipped]
        lines.append(f"{where}: enabled: {' '.join(on) or '(none)'}")
        if off:
            lines.append(f"{where}: disabled: {' '.join(off)}")
        if unskipped:
            lines.append(f"{where}: unskipped: {' '.join(unskipped)}")
    return lines


class SelectionFailed(Exception):
    """An unknown step or tag in -s/-k/-t/--skip-tags/-e (exit code 1, like Stimela)."""
