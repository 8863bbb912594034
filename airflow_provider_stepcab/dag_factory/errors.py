"""Report broken recipe files as Airflow import errors of *their own file*, keeping the good DAGs.

**The problem.** Airflow imports the one loader ``.py`` (``dags/stepcab_dags.py``) that builds every
recipe DAG. If the loader raised, Airflow would drop *every* DAG of that file and show one import
error for the loader. We want instead: good recipes keep their DAGs, and each broken recipe file
shows up in the UI and in ``airflow dags list-import-errors`` under its own path, with
``file:line: key: message`` for each problem.

**Options evaluated (Airflow 3.3.2).**

- ``DagImporterRegistry`` (``airflow.dag_processing.importers``): a per-extension importer could
  parse ``*.yml`` itself and return a ``DagImportResult`` per file. But (1) there is no public hook
  to register one (no entry point or config; the registry is a process-local singleton), and (2)
  the dag-processor *manager* discovers files with ``airflow.utils.file.list_py_file_paths``, which
  only yields ``.py``/``.zip`` files, so a ``.yml`` file is never queued for parsing in a real
  deployment, even if an importer for it were registered. Rejected.
- One generated ``.py`` shim per recipe file: works with public APIs only, but makes users keep a
  generated file per recipe (or the loader write files at parse time, which parsing must never do),
  and the error is keyed by the shim, not the recipe. Supported as an option: a shim calling
  ``build_dags(globals(), files=["x.yml"], on_error="raise")`` raises :class:`RecipeImportError`,
  so Airflow records the error under the shim.
- **Chosen:** the loader does not raise. For each broken recipe file it appends an
  ``airflow.dag_processing.importers.DagImportError`` whose ``file_path`` is the recipe file
  (relative to the bundle root, like Airflow's own keys) to the ``DagImportResult`` that the
  ``PythonDagImporter`` is filling while it executes the loader (found by walking up the call
  stack). ``DagBag.process_file`` copies every such error into ``DagBag.import_errors[path]``; the
  dag processor sends that dict to the manager, which stores one ``ParseImportError`` row per key
  (bundle, path). So in the DB, the UI, ``airflow dags list-import-errors`` and a plain ``DagBag``,
  exactly the broken recipe file has an import error, while the loader's good DAGs are bagged.
  Caveats: the manager's orphan clean-up (on every bundle refresh, ``[dag_processor]
  refresh_interval``) deletes errors of paths that are not ``.py`` files and the next parse of the
  loader (``min_file_process_interval``) records them again; and an error disappears only at that
  clean-up after the file is fixed.

When no ``DagImportResult`` is on the stack (the loader is imported by something other than
Airflow's importer, or a future Airflow changed it) the problems are only logged and issued as
warnings located at the recipe file and line (Airflow shows captured warnings per file).
Every broken file is always logged at ERROR level, at every parse (Airflow needs the import error
each time). Warnings are not: they are part of the file's report (the DAG's docs, ``stepcab
validate``) and of one log line when the file is compiled (:mod:`.compile`), never of a warm parse.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Iterable, Optional

log = logging.getLogger("airflow_provider_stepcab.dag_factory")


class RecipeImportError(Exception):
    """Raised (``on_error="raise"``) when recipe files are broken; the message lists every problem."""


class StepcabRecipeWarning(UserWarning):
    """A recipe problem reported as a Python warning (located at the recipe file and line)."""


def headline(file: str, outcome: Optional[tuple] = None) -> str:
    """The first line of ``file``'s import error; true to what happened to its DAGs.

    :param outcome: ``(dag ids created, recipes whose DAG was not created)`` for the file.
    """
    created, failed = ([], []) if outcome is None else outcome
    created, failed = list(dict.fromkeys(created)), list(dict.fromkeys(failed))
    if created and failed:
        return (f"stepcab: recipe file {file}: the DAG(s) of recipe(s) {', '.join(failed)} were not created "
                f"(created: {', '.join(created)}):")
    if len(failed) == 1:
        return f"stepcab: recipe file {file} is broken; the DAG of recipe {failed[0]} was not created:"
    if failed:
        return f"stepcab: recipe file {file} is broken; its DAGs ({', '.join(failed)}) were not created:"
    return f"stepcab: recipe file {file} is broken; no DAG was created from it:"


def format_problems(file: str, problems: Iterable[Any], *, header: Optional[str] = None,
                    outcome: Optional[tuple] = None) -> str:
    """Render the problems of ``file`` as the text shown in Airflow's import error.

    :param outcome: see :func:`headline` (used when no ``header`` is given).
    """
    lines = [str(p) for p in problems]
    return "\n".join([header or headline(file, outcome), *lines])


def _import_result_on_stack() -> Any:
    """The ``DagImportResult`` the running ``PythonDagImporter`` fills, or ``None``."""
    try:
        from airflow.dag_processing.importers.base import DagImportResult
    except Exception:  # noqa: BLE001 - not inside an Airflow with importers
        return None
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("result")
        if isinstance(candidate, DagImportResult):
            return candidate
        frame = frame.f_back
    return None


def error_key(recipe_file: str, result: Any, loader_file: Optional[str]) -> str:
    """The import-error key of ``recipe_file``, in the convention of ``result.file_path``.

    Airflow keys errors by the path relative to the bundle root (absolute when it has no bundle):
    the bundle root is what remains of the loader's absolute path after removing ``result.file_path``.
    """
    recipe_file = os.path.abspath(recipe_file)
    rel = getattr(result, "file_path", None)
    if not rel or os.path.isabs(rel) or not loader_file:
        return recipe_file
    loader_file = os.path.abspath(loader_file)
    if not loader_file.endswith(os.sep + rel) and loader_file != rel:
        return recipe_file
    root = loader_file[: len(loader_file) - len(rel)].rstrip(os.sep) or os.sep
    inside = os.path.commonpath([root, recipe_file]) == root
    return os.path.relpath(recipe_file, root) if inside else recipe_file


def report_broken(broken: dict[str, list], *, loader_file: Optional[str] = None,
                  outcome: Optional[dict] = None) -> bool:
    """Publish broken recipe files as import errors of their own path (see the module docstring).

    :param broken: recipe file → its error problems (objects with ``loc``/``key``/``message``).
    :param loader_file: absolute path of the loader ``.py`` (``globals()["__file__"]``).
    :param outcome: recipe file → ``(dag ids created, recipes not created)`` (see :func:`headline`).
    :return: True when the errors reached Airflow's import result, False when only logged/warned.
    """
    if not broken:
        return True
    result = _import_result_on_stack()
    for file, problems in broken.items():
        text = format_problems(file, problems, outcome=(outcome or {}).get(file))
        log.error("%s", text)
        if result is None:
            first = problems[0] if problems else None
            loc = getattr(first, "loc", None)
            warnings.warn_explicit(text, StepcabRecipeWarning, filename=str(getattr(loc, "file", file)),
                                   lineno=int(getattr(loc, "line", 0) or 0))
            continue
        from airflow.dag_processing.importers.base import DagImportError

        first = next((p for p in problems if os.path.abspath(str(p.loc.file)) == os.path.abspath(file)),
                     problems[0] if problems else None)
        result.errors.append(DagImportError(
            file_path=error_key(file, result, loader_file), message=text, error_type="stepcab-recipe",
            line_number=getattr(getattr(first, "loc", None), "line", None) or None))
    return result is not None


def raise_broken(broken: dict[str, list], outcome: Optional[dict] = None) -> None:
    """Raise one :class:`RecipeImportError` listing every broken file (``on_error="raise"``)."""
    if broken:
        raise RecipeImportError("\n\n".join(format_problems(f, ps, outcome=(outcome or {}).get(f))
                                            for f, ps in broken.items()))
