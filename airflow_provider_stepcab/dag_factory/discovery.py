"""Find recipe files and decide which recipes become DAGs.

**Where.** The folder of the loader ``.py`` (normally the DAGs folder or the root of a DAG bundle)
searched recursively, plus every folder in Airflow config ``[stepcab] recipe_folders``
(``AIRFLOW__STEPCAB__RECIPE_FOLDERS``) and env ``STEPCAB_RECIPE_FOLDERS`` (both colon-separated).
Hidden files and folders are skipped and ``.airflowignore`` files are honoured like Airflow does
(``[core] dag_ignore_file_syntax``). A file found twice (symlinks, overlapping folders) counts once.

**Which files.** ``*.yml``/``*.yaml`` files whose text has a line starting with ``steps:``,
``DEFAULT:`` or an ``_include`` key (indentation allowed): a cheap text test that skips unrelated
YAML (compose files, CI configs) without parsing them, and still catches a recipe whose YAML is
broken so its error is reported.

**Which recipes** (of a file, after loading it with :func:`~..recipe.api.load_file`):

- ``DEFAULT: name`` set → only that recipe is a DAG (the others are its building blocks);
- otherwise every top-level recipe of the file is a DAG;
- a file without top-level recipes (cabs and ``lib`` only) gives no DAG and no error;
- a file whose recipes are also used as sub-recipes by other files (through ``_include``) still
  gives its own DAGs: a top-level recipe is runnable on its own, exactly like ``stimela run
  file.yml name``. Keep pure library files out with ``.airflowignore`` or put their recipes under
  ``lib.recipes``.

**Which problems break which recipe.** An error whose key path starts with a recipe's name
(``myrecipe.steps.s1.cab``) breaks that recipe only; any other error (YAML syntax, includes,
cabs, ``opts``) breaks every recipe of the file. Warnings are logged and never break anything.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Optional

from airflow_provider_stepcab.dag_factory.naming import RECIPE_SUFFIXES

ENV_FOLDERS = "STEPCAB_RECIPE_FOLDERS"
_MARKER = re.compile(rb"(?m)^[ \t]*(steps|DEFAULT|_include\w*)[ \t]*:")


class RecipeChoice:
    """One recipe of a file that should become a DAG, or the reasons it cannot (``errors``).

    A plain class, not a dataclass: this module is imported by every parse, warm ones included.
    """

    __slots__ = ("file", "name", "recipe", "config", "is_default", "errors")

    def __init__(self, file: str, name: str, recipe: Any, config: Any, is_default: bool,
                 errors: Optional[list] = None):
        self.file, self.name, self.recipe, self.config = file, name, recipe, config
        self.is_default = is_default
        self.errors = list(errors or [])

    def __repr__(self) -> str:
        return f"RecipeChoice({self.file!r}, {self.name!r}, errors={len(self.errors)})"


def extra_folders() -> list[str]:
    """Folders from ``[stepcab] recipe_folders`` and ``$STEPCAB_RECIPE_FOLDERS``."""
    values = []
    try:
        from airflow.configuration import conf

        values.append(conf.get("stepcab", "recipe_folders", fallback="") or "")
    except Exception:  # noqa: BLE001 - no Airflow config (tests, CLI)
        values.append(os.environ.get("AIRFLOW__STEPCAB__RECIPE_FOLDERS", ""))
    values.append(os.environ.get(ENV_FOLDERS, ""))
    out = []
    for value in values:
        out += [os.path.abspath(os.path.expanduser(p)) for p in value.split(":") if p.strip()]
    return list(dict.fromkeys(out))


def default_folders(loader_file: Optional[str]) -> list[str]:
    """The loader's folder (else ``[core] dags_folder``) followed by :func:`extra_folders`."""
    if loader_file:
        base = os.path.dirname(os.path.abspath(loader_file))
    else:
        from airflow.configuration import conf

        base = os.path.abspath(os.path.expanduser(conf.get("core", "dags_folder")))
    return list(dict.fromkeys([base, *extra_folders()]))


def _walk(folder: str) -> Iterable[str]:
    try:
        from airflow.configuration import conf
        from airflow._shared.module_loading.file_discovery import find_path_from_directory

        syntax = conf.get("core", "dag_ignore_file_syntax", fallback="glob") or "glob"
        yield from find_path_from_directory(folder, ".airflowignore", syntax)
        return
    except ImportError:  # pragma: no cover - older/newer Airflow layout
        pass
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (os.path.join(root, f) for f in sorted(files))


def looks_like_recipe_file(path: str) -> bool:
    """Cheap text test: a YAML file with a ``steps:``, ``DEFAULT:`` or ``_include`` key."""
    name = os.path.basename(path)
    if name.startswith(".") or not name.lower().endswith(RECIPE_SUFFIXES):
        return False
    try:
        with open(path, "rb") as fh:
            return bool(_MARKER.search(fh.read()))
    except OSError:
        return False


def find_recipe_files(folders: Iterable[str]) -> list[str]:
    """Absolute paths of the recipe files under ``folders`` (sorted per folder, deduplicated)."""
    seen: set[str] = set()
    out: list[str] = []
    for folder in folders:
        if os.path.isfile(folder):
            candidates: Iterable[str] = [folder]
        elif os.path.isdir(folder):
            candidates = sorted(_walk(folder))
        else:
            continue
        for path in candidates:
            rel_parts = os.path.relpath(path, folder).split(os.sep) if folder != path else []
            if any(p.startswith(".") for p in rel_parts[:-1]):
                continue
            real = os.path.realpath(path)
            if real in seen or not looks_like_recipe_file(path):
                continue
            seen.add(real)
            out.append(os.path.abspath(path))
    return out


def _owner(key: str, names: Iterable[str]) -> Optional[str]:
    head = str(key or "").split(".")[0]
    return head if head in set(names) else None


def choose_recipes(result: Any) -> tuple[list[RecipeChoice], list]:
    """Split a :class:`~..recipe.api.FileResult` into recipes to build and file-level errors.

    :return: ``(choices, file_errors)``; a choice with ``errors`` is broken (file-level errors are
        copied into every choice). When the file has errors but no recipe could even be named,
        ``choices`` is empty and ``file_errors`` is not.
    """
    config = getattr(result, "config", None)
    names = list(getattr(config, "recipe_names", None) or []) or list(result.recipes)
    default = getattr(result, "default", None)
    errors = list(result.problems.errors)
    file_errors = [p for p in errors if _owner(p.key, names) is None]
    chosen = [default] if default else names
    choices = []
    for name in chosen:
        own = [p for p in errors if _owner(p.key, names) == name]
        recipe = result.recipes.get(name)
        choice = RecipeChoice(result.file, name, recipe, config, bool(default), file_errors + own)
        if recipe is None and not choice.errors:
            from airflow_provider_stepcab.recipe.errors import Loc, Problem

            choice.errors.append(Problem(Loc(result.file, 0), name, f"recipe '{name}' could not be built"))
        choices.append(choice)
    return choices, file_errors
