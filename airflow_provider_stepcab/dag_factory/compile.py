"""Compile one recipe file into its file spec (the cold half of :mod:`.spec`).

Runs only when :func:`~.spec.file_spec` finds no valid cache entry: it loads the file through
the recipe layer, picks the recipes that become DAGs (:func:`choose_recipes`), parses their
``opts.airflow`` settings and compiles each DAG's spec (:func:`~.builder.compile_dag`). Kept apart
from :mod:`.spec` so that warm parses do not even load this code. :func:`build_recipe_dag` (the DAG
of any one named recipe, for ``stepcab run``) builds without the cache.

**Which recipes** (:func:`~..recipe.api.file_recipe_names`, documented in
``docs/dag-factory.md``): ``DEFAULT`` when set, else the file's *own* runnable recipes (top-level
keys written in the file itself, with a step naming a cab or recipe); recipes merged in from its
``_include``s are the DAGs of their own file only; a library or include fragment gives no DAG and
no error (one debug line).

**Which problems break which recipe.** An error whose key path starts with one of the file's
recipes (``sub.steps.s1.cab``) breaks the DAG of that recipe and of the DAGs using it as a step;
any other error (YAML syntax, includes, cabs, ``opts``) breaks every DAG of the file. Warnings
never break anything: they go into each DAG's docs and one log line per compiled file.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from typing import Any, Iterable, Iterator, Optional

log = logging.getLogger("airflow_provider_stepcab.dag_factory")


def _tuple(p: Any) -> tuple:
    return (str(p.loc.file), int(p.loc.line or 0), p.key, p.message, p.severity, p.code)


class RecipeChoice:
    """One recipe of a file that should become a DAG, or the reasons it cannot (``errors``)."""

    __slots__ = ("file", "name", "recipe", "config", "is_default", "errors")

    def __init__(self, file: str, name: str, recipe: Any, config: Any, is_default: bool,
                 errors: Optional[list] = None):
        self.file, self.name, self.recipe, self.config = file, name, recipe, config
        self.is_default = is_default
        self.errors = list(errors or [])

    def __repr__(self) -> str:
        return f"RecipeChoice({self.file!r}, {self.name!r}, errors={len(self.errors)})"


def _owner(key: str, names: Iterable[str]) -> Optional[str]:
    head = str(key or "").split(".")[0]
    return head if head in set(names) else None


def _used_recipes(recipe: Any, out: Optional[set] = None) -> set:
    """Names of the lib recipes ``recipe``'s steps refer to, at any depth."""
    out = set() if out is None else out
    for step in getattr(recipe, "steps", {}).values():
        if step.recipe_name:
            out.add(step.recipe_name)
        if step.recipe is not None:
            _used_recipes(step.recipe, out)
    return out


def choose_recipes(result: Any) -> tuple[list[RecipeChoice], list]:
    """Split a :class:`~..recipe.api.FileResult` into recipes to build and file-level errors.

    The recipes are :attr:`~..recipe.api.FileResult.names` (the file's ``DEFAULT``, else its own
    runnable recipes: :func:`~..recipe.api.file_recipe_names`). An error keyed by one of the
    file's recipes (``sub.steps.s.cab``) breaks the DAGs of that recipe and of the recipes using
    it as a step; any other error (YAML, includes, cabs, ``opts``) breaks every DAG of the file.

    :return: ``(choices, file_errors)``; a choice with ``errors`` is broken (file-level errors are
        copied into every choice). When the file has errors but no recipe could even be named,
        ``choices`` is empty and ``file_errors`` is not; a library or fragment gives neither.
    """
    names = list(getattr(result, "names", None) or [])
    known = list(dict.fromkeys(names + list(result.recipes)))
    default = getattr(result, "default", None)
    errors = list(result.problems.errors)
    file_errors = [p for p in errors if _owner(p.key, known) is None]
    choices = []
    for name in names:
        recipe = result.recipes.get(name)
        mine = {name} | (_used_recipes(recipe) if recipe is not None else set())
        own = [p for p in errors if _owner(p.key, known) in mine]
        choice = RecipeChoice(result.file, name, recipe, result.config, bool(default), file_errors + own)
        if recipe is None and not choice.errors:
            from airflow_provider_stepcab.recipe.errors import Loc, Problem

            choice.errors.append(Problem(Loc(result.file, 0), name, f"recipe '{name}' could not be built"))
        choices.append(choice)
    return choices, file_errors


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading builds large acyclic trees: with Airflow's ~200k objects in the heap every automatic
    full collection meanwhile costs ~0.1 s. Objects are still freed by reference counting; the
    cyclic collector resumes afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_file(file: str, operator_class: Any = None) -> tuple[dict, list[str], bool]:
    """Load and compile every DAG of ``file``.

    :return: ``(file spec, files read, cacheable)``; not cacheable after an internal error.
    """
    with _gc_paused():
        return _compile_file(file, operator_class)


def _compile_file(file: str, operator_class: Any) -> tuple[dict, list[str], bool]:
    from airflow_provider_stepcab.dag_factory.builder import compile_dag
    from airflow_provider_stepcab.dag_factory.naming import dag_id_for
    from airflow_provider_stepcab.dag_factory.settings import (
        airflow_section,
        parse_settings,
    )
    from airflow_provider_stepcab.recipe.api import files_read, load_file
    from airflow_provider_stepcab.recipe.errors import Loc, Problems

    out: dict = {"dags": [], "errors": [], "warnings": []}
    try:
        result = load_file(file, persist=False)
    except Exception as exc:  # noqa: BLE001 - one file never breaks the others
        out["errors"].append((file, 0, "", f"internal error while loading: {exc!r}", "error", "internal"))
        return out, [file], False
    choices, file_errors = choose_recipes(result)
    file_warnings = list(result.problems.warnings)
    out["warnings"] = [_tuple(p) for p in file_warnings]
    every_recipe = list(getattr(result.config, "recipe_names", None) or []) + [c.name for c in choices]
    if file_errors and not choices:
        out["errors"] = [_tuple(p) for p in file_errors]
    tree = getattr(result.config, "tree", None)
    section = airflow_section(tree)
    cacheable = True
    for choice in choices:
        problems = Problems()
        problems.extend(choice.errors)
        settings = parse_settings(section, choice.name, problems, loc=Loc(file, 0))
        dag_id = dag_id_for(file, choice.name, is_default=choice.is_default, override=settings.dag_id)
        loc = getattr(choice.recipe, "loc", None) or Loc(file, 0)
        spec = None
        if not problems.errors:
            try:
                spec = compile_dag(dag_id=dag_id, recipe=choice.recipe, recipe_file=file, settings=settings,
                                   operator_class=operator_class, problems=problems, config_tree=tree)
            except Exception as exc:  # noqa: BLE001
                problems.error(loc, choice.name, f"cannot build the DAG: {exc}", "airflow-build")
                cacheable = False
        own_warnings = [p for p in problems.warnings if p not in file_warnings]
        if spec is not None and not problems.errors:
            mine = [p for p in file_warnings if _owner(p.key, every_recipe) in (None, choice.name)]
            spec["dag_kwargs"]["doc_md"] += warnings_md(mine + own_warnings, file)
        out["dags"].append({
            "dag_id": dag_id, "recipe": choice.name, "loc": (str(loc.file), int(loc.line or 0)),
            "spec": None if problems.errors else spec,
            "errors": [_tuple(p) for p in problems.errors],
            "warnings": [_tuple(p) for p in own_warnings],
        })
    _log_summary(file, out, result)
    return out, files_read(result), cacheable


def _log_summary(file: str, out: dict, result: Any) -> None:
    """One log line per compiled file (a cold parse): its warnings are listed in the DAG docs and by
    ``stepcab validate``, never line by line at every parse."""
    warnings = out["warnings"] + [w for entry in out["dags"] for w in entry["warnings"]]
    if warnings:
        first = warnings[0]
        log.warning("stepcab: %s: %d warning(s), listed in the docs of its DAG(s) and by `stepcab validate %s`; "
                    "first: %s:%s: %s: %s", file, len(warnings), file, first[0], first[1], first[2], first[3])
    if not out["dags"] and not out["errors"]:
        log.debug("stepcab: %s has no recipe of its own (a library or include fragment): no DAG", file)


#: at most this many warnings are listed in a DAG's docs
MAX_DOC_WARNINGS = 100


def warnings_md(problems: list, file: str) -> str:
    """The "Warnings" section of a DAG's ``doc_md`` (empty without warnings)."""
    if not problems:
        return ""
    intro = f"{len(problems)} warning(s) while loading `{file}` (also listed by `stepcab validate`):"
    lines = ["", "## Warnings", "", intro, ""]
    lines += [f"- `{str(p).replace('`', chr(39))}`" for p in problems[:MAX_DOC_WARNINGS]]
    if len(problems) > MAX_DOC_WARNINGS:
        lines.append(f"- ... and {len(problems) - MAX_DOC_WARNINGS} more")
    return "\n".join(lines) + "\n"


def build_recipe_dag(recipe_file: str, recipe_name: str) -> Any:
    """Build the DAG of one named recipe of ``recipe_file`` (any recipe, not only the DEFAULT).

    Used by ``stepcab run``'s generated DAG file.

    :raises RecipeImportError: with every error (file:line, key, message) when it cannot be built.
    """
    from airflow_provider_stepcab.dag_factory.builder import build_dag
    from airflow_provider_stepcab.dag_factory.errors import raise_broken
    from airflow_provider_stepcab.dag_factory.naming import dag_id_for
    from airflow_provider_stepcab.dag_factory.settings import (
        airflow_section,
        parse_settings,
    )
    from airflow_provider_stepcab.recipe.api import load_recipe_result

    result = load_recipe_result(recipe_file, recipe_name)
    problems = result.problems
    outcome = {recipe_file: ([], [recipe_name])}
    if result.recipe is None or problems.errors:
        raise_broken({recipe_file: list(problems.errors)}, outcome)
    tree = getattr(result.config, "tree", None) or {}
    settings = parse_settings(airflow_section(tree), recipe_name, problems)
    is_default = getattr(result.config, "default", None) == recipe_name
    dag_id = dag_id_for(recipe_file, recipe_name, is_default=is_default, override=settings.dag_id)
    dag = build_dag(dag_id=dag_id, recipe=result.recipe, recipe_file=recipe_file, settings=settings,
                    operator_class=None, problems=problems, config_tree=tree)
    if dag is None:
        raise_broken({recipe_file: list(problems.errors)}, outcome)
    return dag
