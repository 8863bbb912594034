"""Find the recipe files of a DAGs folder (every parse, warm ones included, runs this).

**Where.** The folder of the loader ``.py`` (normally the DAGs folder or the root of a DAG bundle)
searched recursively, plus every folder in Airflow config ``[stepcab] recipe_folders``
(``AIRFLOW__STEPCAB__RECIPE_FOLDERS``) and env ``STEPCAB_RECIPE_FOLDERS`` (both colon-separated).
Hidden files and folders are skipped and ``.airflowignore`` files are honoured like Airflow does
(``[core] dag_ignore_file_syntax``). A file found twice (symlinks, overlapping folders) counts once.

**Which files.** ``*.yml``/``*.yaml`` files whose text has a line starting with ``steps:``,
``DEFAULT:`` or an ``_include`` key (indentation allowed): a cheap text test that skips unrelated
YAML (compose files, CI configs) without parsing them, and still catches a recipe whose YAML is
broken so its error is reported.

Which recipes of a file become DAGs: :mod:`.compile`.
"""

from __future__ import annotations

import os
import stat
from typing import Iterable, Optional

ENV_FOLDERS = "STEPCAB_RECIPE_FOLDERS"
IGNORE_FILE = ".airflowignore"
#: File name suffixes of recipe files (:mod:`.naming` strips them from dag ids).
RECIPE_SUFFIXES = (".yml", ".yaml")
_KEYS = (b"steps", b"DEFAULT", b"_include")
_BLANK = b" \t"
#: files up to this size are read whole without looking up the loading limits
_SMALL_FILE = 1024 * 1024
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


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


class _NeedsAirflowWalk(Exception):
    """The fast walk met an ``.airflowignore`` file or a symlink loop: Airflow's walker decides."""


def _fast_walk(folder: str) -> tuple[list[str], bool]:
    """Every non-hidden file under ``folder`` (symlinks followed), as long as no ``.airflowignore``
    exists anywhere below it: then no ignore rule applies and this equals Airflow's walk, at a
    fraction of its cost (one ``scandir`` per folder, no ``pathlib``), which every parse pays.

    :returns: ``(files, saw_symlink)``."""
    out: list[str] = []
    seen: set = set()
    todo = [folder]
    links = False
    while todo:
        current = todo.pop()
        st = os.stat(current)
        if (st.st_dev, st.st_ino) in seen:
            raise _NeedsAirflowWalk(current)
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(current) as entries:
            for entry in entries:
                name = entry.name
                if name == IGNORE_FILE:
                    raise _NeedsAirflowWalk(entry.path)
                if name.startswith("."):
                    continue
                if entry.is_symlink():
                    links = True
                if entry.is_dir():
                    todo.append(entry.path)
                else:
                    out.append(entry.path)
    return out, links


def _airflow_walk(folder: str) -> Iterable[str]:
    try:
        from airflow._shared.module_loading.file_discovery import (
            find_path_from_directory,
        )
        from airflow.configuration import conf

        syntax = conf.get("core", "dag_ignore_file_syntax", fallback="glob") or "glob"
        yield from find_path_from_directory(folder, IGNORE_FILE, syntax)
        return
    except ImportError:  # pragma: no cover - older/newer Airflow layout
        pass
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (os.path.join(root, f) for f in sorted(files))


def _walk(folder: str) -> tuple[Iterable[str], bool]:
    """``(files, plain)``: ``plain`` when the fast walk found them without meeting a symlink (no
    hidden path among them, and each file's path is its real path relative to ``folder``)."""
    try:
        files, links = _fast_walk(folder)
        return files, not links
    except (_NeedsAirflowWalk, OSError):
        return _airflow_walk(folder), False


def _recipe_name(path: str) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(RECIPE_SUFFIXES)


def has_recipe_key(text: bytes) -> bool:
    """True if a line of ``text`` is (indented) ``steps:``, ``DEFAULT:`` or ``_include<word>:``.

    A byte scan rather than a regular expression: compiling one costs more than scanning a
    recipe, and every parse would pay it.
    """
    n = len(text)
    for key in _KEYS:
        start = text.find(key)
        while start >= 0:
            i = start - 1
            while i >= 0 and text[i] in _BLANK:
                i -= 1
            if i < 0 or text[i] == 10:  # at a line start (after indentation)
                j = start + len(key)
                if key == b"_include":
                    while j < n and text[j] in _WORD:
                        j += 1
                while j < n and text[j] in _BLANK:
                    j += 1
                if j < n and text[j] == 58:  # ":"
                    return True
            start = text.find(key, start + 1)
    return False


def _read_head(path: str) -> Optional[bytes]:
    """The content of ``path`` if it is a regular file (opened non-blocking: a FIFO never blocks
    discovery), only its first ``max_file_size`` bytes when it is larger (the loader reports it
    as too large); ``None`` if it cannot be read or is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        if size > _SMALL_FILE:  # rare: only then are the limits looked up
            from airflow_provider_stepcab.recipe.limits import current_limits

            size = min(size, current_limits().max_file_size)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def looks_like_recipe_file(path: str) -> bool:
    """Cheap text test: a regular YAML file with a ``steps:``, ``DEFAULT:`` or ``_include`` key."""
    if not _recipe_name(path):
        return False
    head = _read_head(path)
    return head is not None and has_recipe_key(head)


def find_recipe_files(folders: Iterable[str]) -> list[str]:
    """Absolute paths of the recipe files under ``folders`` (sorted per folder, deduplicated by
    real path: a symlink to a recipe found elsewhere, or a folder listed twice, adds nothing)."""
    folders = list(folders)
    seen: set[str] = set()
    out: list[str] = []
    for folder in folders:
        plain = False
        if os.path.isfile(folder):
            candidates: Iterable[str] = [folder]
        elif os.path.isdir(folder):
            walked, plain = _walk(folder)
            candidates = sorted(p for p in walked if _recipe_name(p))
        else:
            continue
        # one plain folder (the usual DAGs folder): paths are unique and never hidden, so neither
        # the hidden-path test nor a realpath per file (tens of microseconds each) is needed
        quick = plain and len(folders) == 1
        for path in candidates:
            if not quick:
                rel_parts = os.path.relpath(path, folder).split(os.sep) if folder != path else []
                if any(p.startswith(".") for p in rel_parts[:-1]):
                    continue
            real = path if quick else os.path.realpath(path)
            if real in seen or not looks_like_recipe_file(path):
                continue
            seen.add(real)
            out.append(os.path.abspath(path))
    return out
