"""The step cache's store: one JSON record per key in a directory every worker sees (no Airflow).

Layout under the store's root (``docs/cache.md``)::

    records/<k[:2]>/<key>.json   # one record per key: who produced it, when, its params/outputs
    latest/<step id>.json        # {"ident", "key"}: the newest record of each step (miss reasons)

Every file is written to a temporary file in the same directory and renamed into place
(``os.replace``: atomic on POSIX), so readers never see half a record and concurrent writers never
lose one: two runs recording the same key write equivalent records (the last one stays), runs
recording different keys write different files. ``latest`` is last-writer-wins by design.
A record that cannot be read (deleted, corrupt, another format) is a miss, never an error.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

#: environment variable and Airflow config key (``[stepcab] step_cache_dir``) of the store
ENV_DIR = "STEPCAB_STEP_CACHE_DIR"
CONFIG_KEY = "step_cache_dir"
#: the store's directory below a working directory (when no location is configured)
DEFAULT_SUBDIR = os.path.join(".stepcab", "step-cache")
RECORD_FORMAT = 1
#: hash file contents in chunks of this size (``opts.airflow.cache_hash: true``)
_CHUNK = 1 << 20


def store_dir(*, workdir: Any, source: str = "conf", configured: Optional[str] = None,
              airflow_home: Optional[str] = None) -> Path:
    """Where the records are: ``configured`` (``$STEPCAB_STEP_CACHE_DIR``, else
    ``[stepcab] step_cache_dir``), else under the working-directory root: ``<workdir>/.stepcab/step-cache``,
    or, for the default one-directory-per-run working directories (``source`` ``"default"``),
    ``$AIRFLOW_HOME/stepcab-runs/.stepcab/step-cache`` (the root they all live in)."""
    if configured:
        return Path(os.path.expanduser(configured)).absolute()
    if source == "default":
        return Path(airflow_home or os.path.expanduser("~/airflow")) / "stepcab-runs" / DEFAULT_SUBDIR
    return Path(str(workdir)) / DEFAULT_SUBDIR


def step_ident(recipe_name: str, step_path: tuple, map_index: Optional[int] = None) -> str:
    """The name of a step across runs: recipe, step path and loop iteration."""
    ident = ".".join((recipe_name, *step_path))
    return ident if map_index is None or map_index < 0 else f"{ident}[{map_index}]"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path) as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class StepCache:
    """The records under ``root`` (see the module docstring)."""

    def __init__(self, root: Any):
        self.root = Path(root)

    def _record_path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a step cache key: {key!r}")
        return self.root / "records" / key[:2] / f"{key}.json"

    def _latest_path(self, ident: str) -> Path:
        return self.root / "latest" / (hashlib.sha256(ident.encode()).hexdigest()[:40] + ".json")

    def get(self, key: str) -> Optional[dict]:
        """The record of ``key`` (``None``: none, or unreadable)."""
        try:
            record = _read_json(self._record_path(key))
        except ValueError:
            return None
        if record is None or record.get("format") != RECORD_FORMAT or record.get("key") != key:
            return None
        return record

    def put(self, record: Mapping) -> Path:
        """Write ``record`` (it has ``key`` and ``ident``) and make it its step's latest."""
        record = {**record, "format": RECORD_FORMAT}
        path = self._record_path(record["key"])
        _write_json(path, record)
        _write_json(self._latest_path(record["ident"]), {"ident": record["ident"], "key": record["key"]})
        return path

    def latest(self, ident: str) -> Optional[dict]:
        """The newest record of step ``ident``, or ``None``."""
        pointer = _read_json(self._latest_path(ident))
        return self.get(pointer["key"]) if pointer and isinstance(pointer.get("key"), str) else None

    def records(self) -> Iterator[dict]:
        """Every readable record (no order)."""
        base = self.root / "records"
        if not base.is_dir():
            return
        for sub in sorted(base.iterdir()):
            if not sub.is_dir():
                continue
            for path in sorted(sub.glob("*.json")):
                record = self.get(path.stem)
                if record is not None:
                    yield record

    def find(self, prefix: str) -> list:
        """Keys starting with ``prefix`` (at least 4 characters)."""
        if len(prefix) < 4 or not all(c in "0123456789abcdef" for c in prefix):
            return []
        sub = self.root / "records" / prefix[:2]
        return sorted(p.stem for p in sub.glob(f"{prefix}*.json")) if sub.is_dir() else []

    def remove(self, key: str) -> bool:
        """Drop the record of ``key`` (and the latest pointers to it)."""
        record = self.get(key)
        try:
            self._record_path(key).unlink()
        except (OSError, ValueError):
            return False
        if record is not None:
            latest = self._latest_path(str(record.get("ident", "")))
            pointer = _read_json(latest)
            if pointer and pointer.get("key") == key:
                try:
                    latest.unlink()
                except OSError:
                    pass
        return True


def describe_path(path: str, *, content_hash: bool = False) -> dict:
    """A summary of the files at ``path`` (a file, or every file below a directory/MS): count,
    bytes, newest mtime and a digest of each file's relative path, size and mtime (``content_hash``:
    of its bytes instead). ``{"missing": True}`` when nothing is there."""
    if not os.path.lexists(path):
        return {"missing": True}
    if os.path.isdir(path):
        found = []
        for top, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(top, name)
                found.append((os.path.relpath(full, path), full))
    else:
        found = [("", path)]
    h = hashlib.sha256()
    count = total = 0
    newest = 0
    for rel, full in found:
        try:
            st = os.stat(full)
        except OSError:
            continue
        count += 1
        total += st.st_size
        newest = max(newest, st.st_mtime_ns)
        h.update(rel.encode() + b"\0")
        if content_hash:
            h.update(_file_digest(full).encode())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(b"\n")
    when = datetime.datetime.fromtimestamp(newest / 1e9, datetime.timezone.utc).isoformat() if count else None
    return {"files": count, "bytes": total, "newest": when, "digest": h.hexdigest(),
            "by": "content" if content_hash else "stat"}


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_paths(paths: Any) -> list:
    """The paths of ``paths`` that do not exist here."""
    return [p for p in paths if not os.path.exists(p)]


def image_digest(backend: str, image: Optional[str]) -> Optional[str]:
    """The image's digest where the engine knows it (podman/docker: the local image's
    ``.Digest``; singularity and kube: ``None``, the image name and version stand)."""
    if backend not in ("podman", "docker") or not image:
        return None
    import subprocess

    try:
        out = subprocess.run([backend, "image", "inspect", "--format", "{{.Digest}}", image],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


__all__ = ["StepCache", "store_dir", "step_ident", "describe_path", "missing_paths", "ENV_DIR", "CONFIG_KEY",
           "RECORD_FORMAT", "utc_now", "image_digest"]
