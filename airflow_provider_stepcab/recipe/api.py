"""The entry points for loading recipes: :func:`load_recipe` and :func:`load_all`.

Results are cached, keyed by the arguments and validated by the content hash of *every* file
that was read (main files and their includes, :attr:`LoadedConfig.files`), so that the DAG
factory can re-parse a folder every 30 seconds cheaply: in memory, and on disk across processes
(:mod:`~airflow_provider_stepcab.diskcache`; Airflow parses DAG files and runs tasks in fresh processes). Cached objects are shared: callers must
treat the returned recipes and configs as read-only (the resolver and planner copy what they change).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from airflow_provider_stepcab import diskcache

from .backends import check_config_backend
from .errors import Loc, Problem, Problems, RecipeError
from .foreign import hide_foreign_content
from .model import Recipe
from .recipes import BuildContext, build_recipe
from .records import record

PathArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
YAML_SUFFIXES = (".yml", ".yaml")


@record
class FileResult:
    """Everything :func:`load_all` found in one file.

    :param file: the file path as given (absolute when it came from a folder).
    :param recipes: recipe name → :class:`Recipe`: the file's own runnable recipes
        (:func:`own_recipe_names`) and its ``DEFAULT``, those that could be built.
    :param default: the file's ``DEFAULT`` recipe name, if any.
    :param names: the recipes the file stands for as DAGs (:func:`file_recipe_names`), built or
        not; empty for a library or fragment (cabs, ``lib``, ``assign`` blocks, step patches only).
    :param problems: load problems plus problems of every recipe in the file.
    :param config: the :class:`~.config.LoadedConfig`, ``None`` if loading failed outright.
    """

    file: str
    recipes: dict = field(default_factory=dict)
    default: Optional[str] = None
    problems: Problems = field(default_factory=Problems)
    config: Any = None
    names: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems.errors


@record
class LoadResult:
    """What :func:`load_recipe_result` returns: the chosen recipe, its config and all problems."""

    recipe: Optional[Recipe]
    config: Any
    problems: Problems
    name: Optional[str] = None


# --------------------------------------------------------------------------- cache

_CACHE_SIZE = 256
_cache: "OrderedDict[Any, tuple[dict, Any]]" = OrderedDict()
_lock = threading.RLock()


_digest = diskcache.digest


def _cached(key: Any, make: Callable[[], tuple[Any, Iterable[str]]], *, persist: bool = True) -> Any:
    """``make()`` once per key while the files it read are unchanged: in memory, then in the
    persistent :mod:`~airflow_provider_stepcab.diskcache` (a fresh dag-processor / task process finds it there). Without
    ``persist`` (a caller with its own cache) nothing is kept: a parse of a folder of recipes must
    not hold every recipe model in memory until it ends."""
    with _lock:
        hit = _cache.get(key)
        if hit is not None and all(_digest(f) == d for f, d in hit[0].items()):
            _cache.move_to_end(key)
            return hit[1]
    if not persist:  # the caller caches its own result (the DAG factory): keep nothing
        return make()[0]
    found, value, digests = diskcache.get(key)
    if not found:
        value, files = make()
        digests = {f: _digest(f) for f in files}
        diskcache.put(key, value, digests)
    with _lock:
        _cache[key] = (digests, value)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def clear_cache(*, disk: bool = False) -> None:
    """Forget every cached load (tests, or after changing ``STIMELA_INCLUDE``); with ``disk``,
    delete the persistent cache too."""
    with _lock:
        _cache.clear()
    if disk:
        diskcache.clear()


def _env_key() -> tuple:
    return (os.environ.get("STIMELA_INCLUDE", ""), os.getcwd())


# --------------------------------------------------------------------------- helpers

def _as_list(paths: PathArg) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def expand_paths(paths: PathArg) -> list[str]:
    """Files as given, folders expanded to their ``*.yml``/``*.yaml`` files (recursively, sorted)."""
    out = []
    for p in _as_list(paths):
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out += [os.path.join(root, f) for f in sorted(files)
                        if f.endswith(YAML_SUFFIXES) and not f.startswith(".")]
        else:
            out.append(p)
    return out


def _load_config(files: list[str], strict: bool, include_dirs: Sequence[str]) -> Any:
    from .config import load_documents
    return load_documents(files, include_dirs=tuple(include_dirs), strict=strict)


def _config_files(config: Any, files: list[str]) -> list[str]:
    return list(dict.fromkeys(list(files) + list(getattr(config, "files", None) or [])))


def recipe_names(config: Any) -> list[str]:
    """Every top-level recipe key of the loaded files, in order, includes included (Stimela's list)."""
    return list(getattr(config, "recipe_names", None) or [])


def _lib_recipes(config: Any) -> dict:
    return ((getattr(config, "tree", None) or {}).get("lib") or {}).get("recipes") or {}


def _written_keys(path: str, config: Any = None) -> set:
    """Top-level keys written in ``path`` itself (before its ``_include``s are merged in): as the
    load of ``config`` recorded them, else parsed again (a 20 MB file took twice as long to load
    when it was parsed a second time for this)."""
    from .config import parse_file

    known = (getattr(config, "written_keys", None) or {}).get(os.path.abspath(path))
    if known is not None:
        return set(known)
    tree, _ = parse_file(os.path.abspath(path))
    return set(tree) if isinstance(tree, dict) else set()


def is_runnable(node: Any) -> bool:
    """True for a recipe section with at least one step naming a ``cab`` or a ``recipe``.

    A section whose steps only carry ``params``/``info``/... (a step patch merged into a recipe by
    ``_include_post``), or that has no steps (``assign`` blocks, parameter schemas), is a fragment.
    """
    steps = node.get("steps") if isinstance(node, dict) else None
    return isinstance(steps, dict) and any(
        isinstance(s, dict) and ("cab" in s or "recipe" in s) for s in steps.values())


def own_recipe_names(config: Any, path: Optional[str] = None) -> list[str]:
    """The runnable recipes a file defines itself: top-level keys written in ``path`` (not only
    merged in from its ``_include``s) whose merged section has a step naming a cab or a recipe
    (:func:`is_runnable`). A file without any (cabs, ``lib``, parameter schemas, ``assign``
    blocks, step patches) is a library or an include fragment.

    :param path: the file (without it every top-level recipe of the config counts as its own).
    """
    names = recipe_names(config)
    if not names:
        return []
    lib = _lib_recipes(config)
    own = _written_keys(path, config) if path is not None else set(names)
    return [n for n in names if n in own and is_runnable(lib.get(n))]


def file_recipe_names(config: Any, path: Optional[str] = None) -> list[str]:
    """The recipes a recipe *file* stands for in the DAG folder (see ``docs/dag-factory.md``,
    "Which recipes, which ids"): ``[DEFAULT]`` when the file (or an include) sets one, else its
    own runnable recipes (:func:`own_recipe_names`); ``[]`` for a library or fragment.
    """
    default = getattr(config, "default", None)
    return [default] if default else own_recipe_names(config, path)


def choose_recipe(loaded: Any, name: Optional[str] = None, *, last: bool = False,
                  files: Optional[Sequence[str]] = None) -> str:
    """The recipe to run from loaded files, by Stimela 2.1.4's rule (``stimela run``): ``name``
    given on the command line, else ``DEFAULT`` unless ``last``, else with ``last`` (``-l``) the
    last recipe of the files, else the only recipe.

    :param loaded: a :class:`~.config.LoadedConfig`.
    :param files: the files given (named in the error), default: the files the recipes came from.
    :raises RecipeError: when no single recipe can be chosen; the message lists the recipes.
    """
    names = recipe_names(loaded)
    lib = _lib_recipes(loaded)
    given = list(files) if files is not None else list(dict.fromkeys(
        (getattr(loaded, "recipe_file", None) or {}).values()))
    where = Loc(", ".join(given) or "<command line>", 0)
    listing = ", ".join(names) or "(none)"
    if name is not None:
        if name in lib:
            return name
        raise RecipeError(Problem(where, name, f"recipe '{name}' not found; recipes are: {listing}",
                                  code="unknown-recipe"))
    default = getattr(loaded, "default", None)
    if default and not last:
        if default in lib:
            return default
        raise RecipeError(Problem(where, "DEFAULT", f"DEFAULT recipe '{default}' not found; recipes are: "
                                  f"{listing}", code="unknown-recipe"))
    if last and names:
        return names[-1]
    if len(names) == 1:
        return names[0]
    if not names:
        flag = "--last-recipe given, but " if last else ""
        raise RecipeError(Problem(where, "", f"{flag}no recipes found", code="no-recipe"))
    raise RecipeError(Problem(where, "", f"several recipes and no DEFAULT: name one (or use --last-recipe "
                              f"for the last); recipes are: {listing}", code="ambiguous-recipe"))


def _build_named(config: Any, names: Iterable[str], problems: Problems, strict: bool) -> dict:
    ctx = BuildContext(config, problems, strict)
    check_config_backend(getattr(config, "tree", config), problems, strict)
    lib = ctx.lib_recipes()
    out = {}
    for name in names:
        if name not in lib:
            continue
        try:
            out[name] = build_recipe(name, lib[name], config, problems, _ctx=ctx)
        except Exception as exc:  # noqa: BLE001 - never let one recipe break the rest
            problems.error(Loc(str(getattr(lib[name], "loc", ("<unknown>",))[0]), 0), name,
                           f"internal error while building recipe '{name}': {exc!r}", "internal")
    return out


# --------------------------------------------------------------------------- public API

def load_recipe_result(paths: PathArg, name: Optional[str] = None, *, strict: bool = False,
                       include_dirs: Sequence[str] = (), last: bool = False) -> LoadResult:
    """Load ``paths`` (merged in order) and build the recipe :func:`choose_recipe` picks; never
    raises: recipe problems, and a recipe that cannot be chosen, are in :attr:`LoadResult.problems`
    (then :attr:`LoadResult.recipe` is ``None``).

    :param last: Stimela's ``-l``/``--last-recipe`` (see :func:`choose_recipe`).
    """
    files = _as_list(paths)
    key = ("recipe", tuple(os.path.abspath(f) for f in files), name, strict, tuple(include_dirs), last,
           _env_key())

    def make() -> tuple[LoadResult, list[str]]:
        config = _load_config(files, strict, include_dirs)
        problems = Problems()
        problems.extend(getattr(config, "problems", None) or [])
        try:
            chosen = choose_recipe(config, name, last=last, files=files)
        except RecipeError as exc:
            if not (problems.errors and not recipe_names(config)):  # a file that did not load says why
                problems.extend(exc.problems)
            return LoadResult(None, config, problems, None), _config_files(config, files)
        recipe = _build_named(config, [chosen], problems, strict).get(chosen)
        problems = hide_foreign_content(problems, getattr(config, "inclusions", ()))
        return LoadResult(recipe, config, problems, chosen), _config_files(config, files)

    return _cached(key, make)


def load_recipe(paths: PathArg, name: Optional[str] = None, *, strict: bool = False,
                include_dirs: Sequence[str] = (), last: bool = False) -> tuple[Recipe, Any]:
    """Load recipe file(s) and build one recipe.

    :param paths: a file or a list of files, merged in order (like ``stimela run a.yml b.yml``).
    :param name: the recipe to build; default: see :func:`choose_recipe`.
    :param last: Stimela's ``--last-recipe``.
    :param strict: keys Stimela would reject are errors (else warnings).
    :returns: ``(recipe, loaded_config)``.
    :raises RecipeError: with every error found (warnings never raise).
    """
    result = load_recipe_result(paths, name, strict=strict, include_dirs=include_dirs, last=last)
    if result.problems.errors or result.recipe is None:
        raise RecipeError(result.problems.errors or [Problem(Loc(str(paths)), "", "no recipe")])
    return result.recipe, result.config


def load_file(path: str, *, strict: bool = False, include_dirs: Sequence[str] = (),
              persist: bool = True) -> FileResult:
    """Load one file and build its own recipes and its ``DEFAULT`` (see :class:`FileResult`, :func:`load_all`).

    :param persist: use the caches (the DAG factory caches its own, smaller result instead:
        :mod:`~airflow_provider_stepcab.dag_factory.spec`); ``False`` loads afresh and keeps nothing.
    """
    key = ("file", os.path.abspath(path), strict, tuple(include_dirs), _env_key())

    def make() -> tuple[FileResult, list[str]]:
        result = FileResult(file=path)
        try:
            config = _load_config([path], strict, include_dirs)
        except RecipeError as exc:
            result.problems.extend(exc.problems)
            return result, [path]
        except Exception as exc:  # noqa: BLE001 - a broken file never stops the others
            result.problems.error(Loc(path, 0), "", f"internal error while loading: {exc!r}", "internal")
            return result, [path]
        result.config = config
        result.default = getattr(config, "default", None)
        result.problems.extend(getattr(config, "problems", None) or [])
        result.names = file_recipe_names(config, path)
        checked = list(dict.fromkeys(own_recipe_names(config, path) + result.names))
        result.recipes = _build_named(config, checked, result.problems, strict)
        if result.default and result.default not in _lib_recipes(config):
            result.problems.error(Loc(path, 0), "DEFAULT", f"DEFAULT recipe '{result.default}' not found",
                                  "unknown-recipe")
        result.problems = hide_foreign_content(result.problems, getattr(config, "inclusions", ()))
        return result, _config_files(config, [path])

    return _cached(key, make, persist=persist)


def files_read(result: FileResult) -> list[str]:
    """Every file :func:`load_file` read to build ``result`` (main file, includes, system config)."""
    return _config_files(result.config, [result.file]) if result.config is not None else [result.file]


def load_all(paths: PathArg, *, strict: bool = False, include_dirs: Sequence[str] = ()) -> list[FileResult]:
    """Load every file (folders are searched for ``*.yml``/``*.yaml``) independently.

    A broken file is reported in its own :class:`FileResult` and never stops the others.
    """
    return [load_file(f, strict=strict, include_dirs=include_dirs) for f in expand_paths(paths)]
