"""A persistent, content-validated cache of loaded recipes, shared between processes.

Airflow's dag-processor parses every DAG file in a *fresh* process (every 30 s by default), and
every task process parses its DAG file again before running; an in-process cache never survives.
This cache pickles what :mod:`.api` builds, in one file per cache key, together with the SHA-256
of every file that was read to build it (main file, includes, cult-cargo's config). An entry is
used only if all those files still have the same content, so editing a recipe or any file it
includes invalidates it. Each entry also records the size and mtime of the source of every module
of this package that was loaded when it was written (the code that built it): editing or
replacing any of them invalidates it too. The key covers the Python version and whatever the
caller puts in it (``STIMELA_INCLUDE``, the working directory ...).

Pure Python, no Airflow import: the recipe layer (:mod:`.recipe.api`) and the DAG factory's parse
cache (:mod:`.dag_factory.spec`) both store entries here.

Where: ``$STEPCAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/stepcab/recipes``, else
``~/.cache/stepcab/recipes``. ``STEPCAB_CACHE_DIR=off`` (or ``0``/``false``/``no``) disables it.

Safety: entries are written to a temporary file and renamed into place (atomic; concurrent
writers never leave a half-written entry, the last one wins). The directory must belong to the
current user and not be writable by others, else the cache is not used (a pickle from an
untrusted place could run code). Any error (unwritable disk, corrupt entry, old format) simply
means a miss: the cache can always be deleted.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
import tempfile
from typing import Any, Optional

ENV_DIR = "STEPCAB_CACHE_DIR"
FORMAT = 2
_OFF = {"off", "0", "false", "no", "none", "disabled"}
#: the package whose loaded modules are recorded in every entry (see :func:`code_state`)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE = __name__.rpartition(".")[0]
_state_memo: Optional[tuple] = None
_checked_dirs: dict[str, bool] = {}


def cache_dir() -> Optional[str]:
    """The cache directory, or ``None`` when disabled."""
    value = os.environ.get(ENV_DIR)
    if value is not None:
        return None if value.strip().lower() in _OFF or not value.strip() else os.path.abspath(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stepcab", "recipes")


def _usable(path: str) -> bool:
    """Create ``path`` (mode 0700) if needed; True if it is ours and not writable by others."""
    ok = _checked_dirs.get(path)
    if ok is None:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.stat(path)
            ok = (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
                  and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
        except OSError:
            ok = False
        _checked_dirs[path] = ok
    return ok


def code_state() -> dict[str, tuple[int, int]]:
    """``{source file: (size, mtime_ns)}`` of every loaded module of this package: the code that
    built whatever is stored now. An entry is valid only while all of them are unchanged, which
    costs one ``stat`` per module at read time (no walk of the package).

    Computed again only after an import (the number of loaded modules changed): a parse of a
    folder writes one entry per recipe file, with the same code loaded."""
    global _state_memo
    if _state_memo is not None and _state_memo[0] == (len(sys.modules), PACKAGE_DIR):
        return _state_memo[1]
    state = _code_state()
    _state_memo = ((len(sys.modules), PACKAGE_DIR), state)
    return state


def _code_state() -> dict[str, tuple[int, int]]:
    state: dict[str, tuple[int, int]] = {}
    prefix = PACKAGE + "."
    for name, module in list(sys.modules.items()):
        if name == PACKAGE or name.startswith(prefix):
            path = getattr(module, "__file__", None)
            if path and path.startswith(PACKAGE_DIR):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                state[path] = (st.st_size, st.st_mtime_ns)
    return state


def _code_unchanged(state: dict) -> bool:
    for path, (size, mtime) in state.items():
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_size != size or st.st_mtime_ns != mtime:
            return False
    return True


def digest(path: str) -> Optional[str]:
    """SHA-256 of a file's content, ``None`` if it cannot be read or is not a regular file (opened
    non-blocking: a FIFO never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def _entry_path(directory: str, key: Any) -> str:
    # the version too: a release built reproducibly can give a changed module its old size and mtime
    from airflow_provider_stepcab import __version__

    name = hashlib.sha256(repr((FORMAT, sys.version, __version__, key)).encode()).hexdigest()
    return os.path.join(directory, name[:2], name + ".pkl")


def get(key: Any) -> tuple[bool, Any, dict]:
    """``(hit, value, digests)`` for ``key``; a hit only if every recorded file is unchanged."""
    directory = cache_dir()
    if directory is None or not _usable(directory):
        return False, None, {}
    try:
        with open(_entry_path(directory, key), "rb") as fh:
            stored_key, code, digests, value = pickle.load(fh)
    except Exception:  # noqa: BLE001 - missing, corrupt or from an old format: a miss
        return False, None, {}
    if stored_key != repr(key) or not _code_unchanged(code) or any(digest(f) != d for f, d in digests.items()):
        return False, None, {}
    return True, value, digests


def put(key: Any, value: Any, digests: dict) -> None:
    """Store ``value`` (built from the files in ``digests``) under ``key``; errors are ignored."""
    directory = cache_dir()
    if directory is None or not _usable(directory) or any(d is None for d in digests.values()):
        return
    path = _entry_path(directory, key)
    tmp = None
    try:
        data = pickle.dumps((repr(key), code_state(), digests, value), protocol=pickle.HIGHEST_PROTOCOL)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".pkl")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        tmp = None
    except Exception:  # noqa: BLE001 - unpicklable value, full disk ...: just no cache
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def clear() -> None:
    """Delete every entry of the cache directory."""
    import shutil

    directory = cache_dir()
    if directory is not None and os.path.isdir(directory):
        shutil.rmtree(directory, ignore_errors=True)
    _checked_dirs.clear()
