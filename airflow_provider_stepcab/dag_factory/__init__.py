"""Turn Stimela recipe files into Airflow DAGs.

Put ``dags/stepcab_dags.py`` (two lines calling :func:`build_dags`) into the DAGs folder; every
recipe file next to it (and in the extra recipe folders) becomes DAGs. See :mod:`.discovery`
(which files), :mod:`.compile` (which recipes), :mod:`.spec` (the parse cache and materialising
DAGs), :mod:`.naming` (dag and task ids), :mod:`.settings` (``opts.airflow``),
:mod:`.params` (trigger form), :mod:`.builder` (DAG shape), :mod:`.unrolling` (nested loops unrolled at
parse time), :mod:`.dataflow` (parallel steps) and
:mod:`.errors` (how broken recipes surface).

Parsing is side-effect free: no DB, network or subprocess; recipe files are read through the
recipe loader's content-hash cache; when Airflow parses the file to run one task
(``get_parsing_context().dag_id`` is set) only the files that can produce that DAG are loaded and
only that DAG is built.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Optional

__all__ = ["build_dags", "build_recipe_dag", "RecipeImportError"]

log = logging.getLogger("airflow_provider_stepcab.dag_factory")


def __getattr__(name: str) -> Any:
    # RecipeImportError lives in .errors, imported only when something is broken (warm parses of
    # good recipes never need it); build_recipe_dag in .compile
    if name == "RecipeImportError":
        from airflow_provider_stepcab.dag_factory.errors import RecipeImportError

        return RecipeImportError
    if name == "build_recipe_dag":  # compile-only: ``stepcab run``'s generated DAG file
        from airflow_provider_stepcab.dag_factory.compile import build_recipe_dag

        return build_recipe_dag
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _wanted_dag_id() -> Optional[str]:
    try:
        from airflow.sdk import get_parsing_context

        return get_parsing_context().dag_id
    except Exception:  # noqa: BLE001
        return None


def _resolve_operator_class(operator_class: Any) -> Any:
    """``None``, a ``"module:Class"``/dotted path (kept as a string: imported when materialised), or
    a class (registered so that its path resolves to it even when it cannot be imported)."""
    if operator_class is None or isinstance(operator_class, str):
        return operator_class
    from airflow_provider_stepcab.dag_factory.spec import class_path, register_class

    register_class(class_path(operator_class), operator_class)
    return operator_class


def _compile(file: str, operator_class: Any) -> tuple:
    """A cache miss: compile ``file`` (imports the recipe layer; see :mod:`.compile`)."""
    from airflow_provider_stepcab.dag_factory.compile import compile_file

    return compile_file(file, operator_class)


def _build_file(file: str, operator_class: Any, wanted: Optional[str], dags: dict, origins: dict,
                broken: dict, outcome: dict) -> None:
    """Materialise the DAGs of ``file`` into ``dags``; its errors go to ``broken[file]`` and
    ``outcome[file] = (dag ids created, recipes whose DAG was not created)``. Warnings are not
    logged here (a warm parse must not repeat them): :mod:`.compile` logs one line per compiled file."""
    from airflow_provider_stepcab.dag_factory.spec import file_spec, materialize, to_problems

    fspec = file_spec(file, operator_class, compiler=_compile)
    created, failed = outcome.setdefault(file, ([], []))
    if fspec["errors"] and not fspec["dags"]:
        broken.setdefault(file, []).extend(to_problems(fspec["errors"]))
    for entry in fspec["dags"]:
        dag_id = entry["dag_id"]
        if wanted is not None and dag_id != wanted:
            continue
        errors = list(entry["errors"])
        if dag_id in origins and not errors:
            errors.append((*entry["loc"], entry["recipe"], f"dag_id '{dag_id}' is already used by recipe "
                           f"'{origins[dag_id][1]}' of {origins[dag_id][0]}; set opts.airflow.dag_id",
                           "error", "airflow-dag-id-clash"))
        dag = None
        if not errors:
            try:
                dag = materialize(entry["spec"])
            except Exception as exc:  # noqa: BLE001 - e.g. Airflow rejecting a schedule
                errors.append((*entry["loc"], entry["recipe"], f"cannot build the DAG: {exc}", "error",
                               "airflow-build"))
        if errors or dag is None:
            failed.append(entry["recipe"])
            for p in to_problems(errors):
                if p not in broken.setdefault(file, []):
                    broken[file].append(p)
            continue
        dags[dag_id] = dag
        created.append(dag_id)
        origins[dag_id] = (file, entry["recipe"])


def build_dags(globals_dict: Optional[dict] = None, *, folders: Optional[Iterable[str]] = None,
               files: Optional[Iterable[str]] = None, operator_class: Any = None,
               on_error: str = "report") -> dict:
    """Build one DAG per recipe found (see :mod:`.discovery`) and return ``{dag_id: DAG}``.

    :param globals_dict: the loader module's ``globals()``: DAGs are added to it, and its
        ``__file__`` locates the default recipe folder and keys import errors.
    :param folders: folders (or files) to search instead of the loader's folder + extra folders.
    :param files: exact recipe files (skips discovery; for per-recipe shim loaders).
    :param operator_class: step operator class or dotted path for every step (default: chosen per
        step from its backend settings, see :mod:`.operator_choice`);
        it must accept ``recipe_file``, ``recipe_name``, ``step_path``, ``backend``, ``loop_value``.
    :param on_error: ``"report"`` (default): broken recipe files become import errors of their own
        path and the good DAGs are kept (:mod:`.errors`); ``"raise"``: raise
        :class:`RecipeImportError` after building (Airflow then drops every DAG of the loader).
    """
    from airflow_provider_stepcab.dag_factory.discovery import (
        default_folders,
        find_recipe_files,
    )

    loader_file = (globals_dict or {}).get("__file__")
    if files is not None:
        paths = [os.path.abspath(f) for f in files]
    else:
        search = list(folders) if folders is not None else default_folders(loader_file)
        paths = find_recipe_files(os.path.abspath(os.path.expanduser(f)) for f in search)
    wanted = _wanted_dag_id()
    op_class = _resolve_operator_class(operator_class)
    dags: dict = {}
    origins: dict = {}
    broken: dict = {}
    outcome: dict = {}
    if wanted is not None:  # running one task: load only files that can produce that dag_id
        from airflow_provider_stepcab.dag_factory.naming import dag_id_may_come_from

        for path in [p for p in paths if dag_id_may_come_from(wanted, p)]:
            _build_file(path, op_class, wanted, dags, origins, broken, outcome)
        if wanted not in dags:  # an opts.airflow.dag_id override: fall back to everything
            for path in paths:
                _build_file(path, op_class, wanted, dags, origins, broken, outcome)
                if wanted in dags:
                    break
    else:
        for path in paths:
            _build_file(path, op_class, None, dags, origins, broken, outcome)
    if globals_dict is not None:
        globals_dict.update(dags)
    if broken:
        from airflow_provider_stepcab.dag_factory.errors import (
            raise_broken,
            report_broken,
        )

        if on_error == "raise":
            raise_broken(broken, outcome)
        report_broken(broken, loader_file=loader_file, outcome=outcome)
    log.debug("stepcab: %d DAG(s) from %d recipe file(s)", len(dags), len(paths))
    return dags
