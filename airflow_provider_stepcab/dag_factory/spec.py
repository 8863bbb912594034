"""What one recipe file turns into, as plain data, cached across parses.

Airflow re-parses the DAGs folder every 30 s in fresh processes, and nearly always nothing has
changed. :func:`file_spec` therefore caches, per recipe file, the *compiled* result: the spec of
each DAG (:mod:`.materialize`), the file's errors and warnings. A warm parse reads that entry,
checks the SHA-256 of every file the recipe was built from (includes and cult-cargo's config too,
see :mod:`~airflow_provider_stepcab.diskcache`) and materialises the DAGs; the recipe layer
is not even imported. Any edit to one of those files, to a module of this package that built the
entry, ``STIMELA_INCLUDE`` or the working directory is a miss: the file is compiled again and the
entry replaced.

A file spec is a dict::

    {"dags": [{"dag_id", "recipe", "loc": (file, line), "spec": <DAG spec> | None,
               "errors": [problem], "warnings": [problem]}, ...],
     "errors": [problem],     # file-level errors when no recipe could even be named
     "warnings": [problem]}   # load warnings of the file

where a problem is the tuple ``(file, line, key, message, severity, code)``
(:func:`to_problems` makes :class:`~airflow_provider_stepcab.recipe.errors.Problem` objects).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from typing import Any, Iterator, Optional

from airflow_provider_stepcab import diskcache

FORMAT = 1

_memory: dict[Any, tuple[dict, dict]] = {}
_lock = threading.Lock()


def _tuple(p: Any) -> tuple:
    return (str(p.loc.file), int(p.loc.line or 0), p.key, p.message, p.severity, p.code)


def to_problems(items: list) -> list:
    """:class:`~airflow_provider_stepcab.recipe.errors.Problem` objects from problem tuples."""
    from airflow_provider_stepcab.recipe.errors import Loc, Problem

    return [Problem(Loc(f, line), key, msg, severity, code) for f, line, key, msg, severity, code in items]


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
    from airflow_provider_stepcab.dag_factory.discovery import choose_recipes
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
    out["warnings"] = [_tuple(p) for p in result.problems.warnings]
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
        out["dags"].append({
            "dag_id": dag_id, "recipe": choice.name, "loc": (str(loc.file), int(loc.line or 0)),
            "spec": None if problems.errors else spec,
            "errors": [_tuple(p) for p in problems.errors],
            "warnings": [_tuple(p) for p in problems.warnings if p not in result.problems.warnings],
        })
    return out, files_read(result), cacheable


def _key(file: str, class_key: Optional[str]) -> tuple:
    return ("dagspec", FORMAT, os.path.abspath(file), class_key,
            os.environ.get("STIMELA_INCLUDE", ""), os.getcwd())


def file_spec(file: str, operator_class: Any = None) -> dict:
    """The file spec of ``file`` (module docstring): from memory, the disk cache, or compiled.

    :param operator_class: ``None`` (per-step choice), a ``"module:Class"`` path, or a class; a
        class that cannot be imported by its name (defined in a function) is never cached on disk.
    """
    persist = True
    class_key = None
    if operator_class is not None:
        from airflow_provider_stepcab.dag_factory.builder import class_path

        class_key = class_path(operator_class)
        persist = "<locals>" not in class_key
    key = _key(file, class_key)
    with _lock:
        hit = _memory.get(key)
    if hit is not None and all(diskcache.digest(f) == d for f, d in hit[0].items()):
        return hit[1]
    found, value, digests = diskcache.get(key) if persist else (False, None, {})
    if not found:
        value, files, cacheable = compile_file(file, operator_class)
        digests = {f: diskcache.digest(f) for f in files}
        if not cacheable:
            return value
        if persist:
            diskcache.put(key, value, digests)
    with _lock:
        _memory[key] = (digests, value)
    return value


def clear_memory() -> None:
    """Forget the in-process entries (tests)."""
    with _lock:
        _memory.clear()
