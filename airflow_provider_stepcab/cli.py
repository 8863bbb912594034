"""The ``stepcab`` command: ``validate``, ``plan`` and ``doc`` (``run``/``build`` are added later).

Nothing here imports Airflow at module import time; subcommands that need it import it lazily.

* ``stepcab validate PATH... [--strict]`` — one line per problem, ``file:line: key.path: message``;
  exit status 1 if there are errors, 0 with warnings and notes only (a note names a required input
  that nothing sets: it needs a value at run time). Folders are searched for YAML files.
* ``stepcab plan FILE... [--recipe NAME | --last-recipe] [--backend B] [-p NAME=VALUE ...] [--json]``;
  the recipe is chosen as ``stimela run`` does (:func:`.recipe.api.choose_recipe`): ``--recipe``,
  else the files' ``DEFAULT`` unless ``-l``/``--last-recipe``, else with ``-l`` the last recipe of
  the files, else the only one.
* ``stepcab plan FILE... --script [--backend native|singularity|podman|docker]`` — a shell script.
* ``stepcab doc NAME [FILE...]`` — the schema of a cab or recipe as a table.
* ``stepcab build FILE... [-r]`` — build/pull the container images (:mod:`.build_cli`).
* ``stepcab plan FILE... --cache`` and ``stepcab cache ls|show|clear`` — the step cache (:mod:`.cache_cli`).

Exit status: 0 success (warnings allowed); 1 the recipe has errors: a file that cannot be read or
parsed, a recipe that cannot be chosen (unknown name, several and no ``DEFAULT``), bad ``-p``
values or names, planning errors (each printed as one ``file:line: key: message`` line, no
traceback); 2 bad usage (an unknown option, ``-p`` without ``=``, ``--script`` with a backend it
cannot script).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

from .schema_table import format_schema  # noqa: E402,F401 - `stepcab doc` prints it

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def _print_problems(problems: Any, out: Any, seen: Optional[set] = None) -> tuple[int, int]:
    errors = warnings = 0
    for p in problems:
        line = str(p)
        if seen is not None:
            if line in seen:
                continue
            seen.add(line)
        print(line, file=out)
        if p.is_error:
            errors += 1
        elif p.severity == "warning":
            warnings += 1
    return errors, warnings


# --------------------------------------------------------------------------- validate

def _run_time_notes(recipes: dict) -> Any:
    """A note for every required input of the file's recipes that nothing sets."""
    from .recipe.errors import Problems
    from .recipe.requirements import required_unset
    notes = Problems()
    for rname, recipe in recipes.items():
        for name, loc in required_unset(recipe):
            notes.note(loc, f"{rname}.inputs.{name}", f"required input '{name}' needs a value at run time: "
                       f"nothing in the recipe sets it (give it with -p {name}=... or in the trigger form)",
                       "needs-value")
    return notes


def cmd_validate(args: argparse.Namespace) -> int:
    from .recipe.api import load_all
    seen: set = set()
    n_err = n_warn = n_notes = n_files = n_recipes = 0
    for result in load_all(args.paths, strict=args.strict, include_dirs=args.include or ()):
        n_files += 1
        n_recipes += len(result.recipes)
        e, w = _print_problems(result.problems, sys.stdout, seen)
        notes = _run_time_notes(result.recipes)
        _print_problems(notes, sys.stdout, seen)
        n_err += e
        n_warn += w
        n_notes += len(notes)
    if not args.quiet:
        tail = f", {n_notes} note(s)" if n_notes else ""
        print(f"{n_files} file(s), {n_recipes} recipe(s): {n_err} error(s), {n_warn} warning(s){tail}",
              file=sys.stderr)
    return EXIT_ERRORS if n_err else EXIT_OK


# --------------------------------------------------------------------------- plan

def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE read as YAML (``x=5`` → 5, ``x=[a,b]`` → list, ``x=`` → ``""``)."""
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    if not name:
        raise argparse.ArgumentTypeError(f"empty parameter name in {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return name.strip(), parsed


def _format_plan(plan: Any) -> str:
    import shlex
    lines = [f"recipe: {plan.recipe}"]
    for i, s in enumerate(plan.steps, 1):
        extra = f", wrapper: {s.wrapper}" if s.wrapper else ""
        skip = "" if s.skip is False else f"  [skip: {s.skip}]"
        lines.append(f"{i:3d}. {s.name}  (cab: {s.cab}, backend: {s.backend}{extra}){skip}")
        if s.argv is not None:
            lines.append(f"       argv: {shlex.join(str(a) for a in s.argv)}")
        if s.error:
            lines.append(f"       error: {s.error}")
        for name, reason in s.unresolved.items():
            lines.append(f"       unresolved {name}: {reason}")
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan.steps import plan_recipe
    from .recipe.api import load_recipe_result
    from .recipe.errors import RecipeError
    params = dict(args.param or [])
    try:
        result = load_recipe_result(args.files, args.recipe, strict=args.strict, include_dirs=args.include or (),
                                    last=args.last_recipe)
    except RecipeError as exc:
        _print_problems(exc.problems, sys.stderr)
        return EXIT_ERRORS
    errors, _ = _print_problems(result.problems, sys.stderr)
    if result.recipe is None or errors:
        return EXIT_ERRORS
    import os
    try:
        if args.script:
            return _plan_script(args, result, params)
        if args.cache:
            from .cache_cli import print_plan_cache
            return print_plan_cache(result.recipe, result.config, params, backend=args.backend,
                                    cwd=os.path.abspath(args.workdir or os.getcwd()), cache_dir=args.cache_dir)
        plan = plan_recipe(result.recipe, result.config, params, backend=args.backend, strict=args.strict,
                           cwd=os.path.abspath(args.workdir or os.getcwd()))
    except RecipeError as exc:  # e.g. a command line that cannot be built: one line per problem
        _print_problems(exc.problems, sys.stderr)
        return EXIT_ERRORS
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(_format_plan(plan))
    errors, _ = _print_problems(plan.problems, sys.stderr)
    return EXIT_ERRORS if errors else EXIT_OK


def _plan_script(args: argparse.Namespace, result: Any, params: dict) -> int:
    """``plan --script``: a shell script running the steps (see :mod:`.plan.script`)."""
    import os

    from .plan.script import recipe_script
    from .runtime.containers import LocalFs
    try:
        text, problems = recipe_script(result.recipe, result.config, params, backend=args.backend,
                                       cwd=os.path.abspath(args.workdir or os.getcwd()), fs=LocalFs(),
                                       header="files: " + " ".join(args.files))
    except ValueError as exc:
        print(f"stepcab plan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(text, end="")
    errors, _ = _print_problems(problems, sys.stderr)
    return EXIT_ERRORS if errors else EXIT_OK


# --------------------------------------------------------------------------- doc

def cmd_doc(args: argparse.Namespace) -> int:
    from .recipe.api import _load_config
    from .recipe.errors import Problems
    from .recipe.recipes import BuildContext, build_recipe
    config = _load_config(list(args.files), args.strict, args.include or ())
    problems = Problems()
    problems.extend(config.problems)
    tree = config.tree
    cabs = tree.get("cabs") or {}
    recipes = (tree.get("lib") or {}).get("recipes") or {}
    name = args.name
    ctx = BuildContext(config, problems, args.strict)
    if name in recipes:
        recipe = build_recipe(name, recipes[name], config, problems, _ctx=ctx)
        text = format_schema(f"recipe '{name}'", recipe.info, [("inputs", recipe.inputs),
                                                               ("outputs", recipe.outputs)])
        if recipe.steps:
            text += "\n\nsteps:\n" + "\n".join(
                f"  {label}: {s.cab_name or s.recipe_name or (s.cargo.name if s.cargo else '?')}"
                f"{'  ' + s.info if s.info else ''}" for label, s in recipe.steps.items())
    elif name in cabs:
        from .recipe.yamlio import loc_of
        cab = ctx.cab(name, loc_of(cabs, name), f"cabs.{name}")
        if cab is None:
            _print_problems(problems, sys.stderr)
            return EXIT_ERRORS
        text = format_schema(f"cab '{name}' (command: {cab.command})", cab.info,
                             [("inputs", cab.inputs), ("outputs", cab.outputs)])
    else:
        print(f"stepcab doc: '{name}' is neither a cab nor a recipe in the given files", file=sys.stderr)
        if recipes:
            print(f"  recipes: {', '.join(recipes)}", file=sys.stderr)
        if cabs:
            print(f"  cabs: {', '.join(cabs)}", file=sys.stderr)
        return EXIT_ERRORS
    print(text)
    _print_problems([p for p in problems if p.is_error], sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The argument parser; later subcommands (``run``, ``build``) add themselves to ``subparsers``."""
    parser = argparse.ArgumentParser(prog="stepcab", description="Stimela 2 recipes for Apache Airflow")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"stepcab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--strict", action="store_true", help="keys Stimela would reject are errors, not warnings")
        p.add_argument("-I", "--include", action="append", metavar="DIR", help="extra include search directory")

    p = sub.add_parser("validate", help="check recipe files and report every problem")
    p.add_argument("paths", nargs="+", metavar="PATH", help="recipe files or folders")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    common(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show the steps, backends and command lines of a recipe")
    p.add_argument("files", nargs="+", metavar="FILE", help="recipe file(s), merged in order")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("-r", "--recipe", metavar="NAME",
                        help="recipe to plan (default: DEFAULT, else with -l the last one, else the only one)")
    choice.add_argument("-l", "--last-recipe", action="store_true",
                        help="if several recipes are defined, plan the last one (as stimela run -l)")
    p.add_argument("-b", "--backend", metavar="B", help="backend override, e.g. native or 'singularity,native'")
    p.add_argument("-p", "--param", action="append", type=parse_param, metavar="NAME=VALUE",
                   help="recipe input or step.param; VALUE is read as YAML")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--script", action="store_true",
                   help="print a shell script running the steps (-b native|singularity|podman|docker)")
    p.add_argument("--workdir", metavar="DIR", help="with --script: directory the steps run in (default: here)")
    p.add_argument("--cache", action="store_true",
                   help="per step: 'cached' or 'runs: <reason>' against the step cache (docs/cache.md)")
    p.add_argument("--cache-dir", metavar="DIR", help="with --cache: the store (default: WORKDIR/.stepcab/step-cache)")
    common(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("doc", help="show the parameters of a cab or recipe")
    p.add_argument("name", metavar="CAB|RECIPE")
    p.add_argument("files", nargs="*", metavar="FILE", help="files defining it (e.g. '(cultcargo)wsclean.yml')")
    common(p)
    p.set_defaults(func=cmd_doc)

    from .build_cli import add_build_parser
    add_build_parser(sub, common, parse_param)
    from .report import add_parser as add_report_parser
    add_report_parser(sub)
    from .cache_cli import add_parser as add_cache_parser
    add_cache_parser(sub)
    # `run` has its own parser (run_cli), imported only when used: it configures Airflow first.
    sub.add_parser("run", add_help=False, help="run a recipe through real Airflow (dag.test), like `stimela run`")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from .run_cli import main as run_main

        return run_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. piped into head
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
