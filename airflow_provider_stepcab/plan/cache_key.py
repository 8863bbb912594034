"""The key of a step's result for the step cache, and why two keys differ (pure: no I/O).

A *key document* holds everything that decides what a cab step produces (``docs/cache.md``):

* ``cab``: the cab's name, command, flavour and a digest of its definition (inputs, outputs,
  policies, defaults, wranglers, image ... — everything but source locations, help texts and
  backend settings);
* ``run``: the inner backend (``native``, ``singularity``, ``podman``, ``docker``, ``kube``;
  the Slurm wrapper is scheduling and not in it), the image name and its digest when the backend
  knows it, the native ``virtual_env`` and the cab's ``management.environment`` as evaluated;
* ``params``: every resolved parameter (inputs and outputs), File/Directory/MS paths absolute;
* ``inputs``: per File/Directory/MS input path, either the key of the step of this run that
  last used that path (``from``, Merkle style: that key covers everything upstream), or, for a
  path nothing in the recipe used before, a summary of its files (``files``/``bytes``/``newest``
  and a ``digest`` of every file's relative path, size and mtime, or of their contents).

:func:`step_key` is the SHA-256 of the document's canonical JSON. The caller passes in what
needs I/O: the stat summary of raw inputs (``describe``) and the provenance map of earlier steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional

FORMAT = 1
#: fields of the cab model left out of its definition digest (not what the step computes)
_NOT_DEFINITION = frozenset({"loc", "info", "given_fields", "backend", "metavar", "category", "abbreviation"})


def canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of ``value`` (dataclasses by their fields, mappings
    with string keys, tuples as lists, anything else by ``str``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in _NOT_DEFINITION}
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (frozenset, set)):
        return sorted(str(v) for v in value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    return str(value)


def dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(dumps(canonical(value)).encode()).hexdigest()


def cab_definition(cab: Any) -> str:
    """Digest of a cab's definition (see the module docstring for what is left out)."""
    return digest(cab)


def file_params(cab: Any, params: Mapping[str, Any], *, outputs: bool = True) -> dict:
    """``{name: [path, ...]}`` of the File/Directory/MS parameters of ``cab`` that have a value
    (URLs left out); ``outputs=False``: inputs only."""
    schema = {**cab.inputs, **cab.outputs} if outputs else cab.inputs
    out = {}
    for name, p in schema.items():
        dtype = getattr(p, "dtype", None)
        if dtype is None or not (dtype.is_file or dtype.is_file_list) or name not in params:
            continue
        value = params[name]
        values = value if isinstance(value, (list, tuple)) else [value]
        paths = [str(v) for v in values if v not in (None, "") and isinstance(v, (str, os.PathLike))
                 and "://" not in str(v)]
        if paths:
            out[name] = paths
    return out


def absolute(path: str, workdir: str) -> str:
    """``path`` made absolute against ``workdir`` and normalised (no I/O)."""
    path = os.path.expanduser(str(path))
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(str(workdir), path))


def producer_of(path: str, provenance: Mapping[str, Mapping]) -> Optional[Mapping]:
    """The provenance entry of ``path`` or of the nearest directory above it (a file inside a
    Directory/MS another step produced), else ``None``."""
    current = path
    while True:
        entry = provenance.get(current)
        if entry is not None:
            return entry
        parent = os.path.dirname(current)
        if not parent or parent == current:
            return None
        current = parent


def merge_provenance(maps: Iterable[Optional[Mapping]]) -> dict:
    """One map ``{path: {"key", "step"}}`` from the maps of several upstream steps. A path two
    of them know from different steps gets a key of both (sorted: the same whatever the order)."""
    out: dict = {}
    for m in maps:
        for path, entry in (m or {}).items():
            if not isinstance(entry, Mapping) or "key" not in entry:
                continue
            have = out.get(path)
            if have is None or have["key"] == entry["key"]:
                out[path] = {"key": entry["key"], "step": entry.get("step", "?")}
                continue
            keys = sorted({*have["key"].split("+"), *str(entry["key"]).split("+")})
            steps = sorted({*have["step"].split("+"), *str(entry.get("step", "?")).split("+")})
            out[path] = {"key": hashlib.sha256("+".join(keys).encode()).hexdigest(), "step": "+".join(steps),
                         "keys": keys}
    return out


def with_step(provenance: Mapping, paths: Iterable[str], key: str, step: str) -> dict:
    """``provenance`` with every path of ``paths`` now last used by step ``step`` (key ``key``)."""
    out = dict(provenance)
    for path in paths:
        out[path] = {"key": key, "step": step}
    return out


#: backends whose steps run in the cab's image (its name is in the key)
CONTAINER_BACKENDS = ("singularity", "podman", "docker", "kube")


def image_of(cab: Any, backend: str, options: Any, images: Optional[Mapping] = None) -> Optional[str]:
    """The image a step of ``cab`` runs in under ``backend`` (``None``: native, or no image).

    :param options: the merged ``BackendOptions`` (or mapping) with the registry settings.
    """
    if backend not in CONTAINER_BACKENDS:
        return None
    from .images import ImageError, resolve_cab_image

    try:
        image = resolve_cab_image(cab, options, images)
    except (ImageError, ValueError):
        return None
    return image.path or image.docker_uri


def key_document(*, cab: Any, backend: str, params: Mapping[str, Any], workdir: str,
                 provenance: Mapping[str, Mapping], describe: Callable[[str], Mapping],
                 image: Optional[str] = None, image_digest: Optional[str] = None,
                 virtual_env: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> dict:
    """The key document of one resolved cab step (module docstring).

    :param params: the resolved parameters (plain values).
    :param workdir: the run's working directory (relative paths are relative to it).
    :param provenance: ``{absolute path: {"key", "step"}}`` of the earlier steps of this run.
    :param describe: ``describe(absolute path) -> summary`` of an input nothing produced (stat).
    """
    files = file_params(cab, params)
    shown = {}
    for name, value in params.items():
        if name in files:
            paths = [absolute(p, workdir) for p in files[name]]
            shown[name] = paths if isinstance(value, (list, tuple)) else paths[0]
        else:
            shown[name] = canonical(value)
    inputs: dict = {}
    for name, paths in file_params(cab, params, outputs=False).items():
        entries = []
        for path in (absolute(p, workdir) for p in paths):
            entry = producer_of(path, provenance)
            if entry is not None:
                entries.append({"path": path, "from": entry["key"], "step": entry.get("step", "?")})
            else:
                entries.append({"path": path, **dict(describe(path))})
        inputs[name] = entries
    kind = getattr(getattr(cab, "flavour", None), "kind", None) or "binary"
    return {
        "format": FORMAT,
        "cab": {"name": cab.name, "command": cab.command, "flavour": kind, "definition": cab_definition(cab)},
        "run": {"backend": backend, "image": image, "image_digest": image_digest,
                "virtual_env": virtual_env, "env": dict(sorted((env or {}).items()))},
        "params": shown,
        "inputs": inputs,
    }


def step_key(document: Mapping) -> str:
    """The key: SHA-256 of the document's canonical JSON, without the producers' step names
    (kept in the document for explanations): a renamed step still hits, and so do its consumers."""
    inputs = {name: [{k: v for k, v in e.items() if k != "step"} for e in entries]
              for name, entries in (document.get("inputs") or {}).items()}
    return hashlib.sha256(dumps({**document, "inputs": inputs}).encode()).hexdigest()


def _short(value: Any, limit: int = 60) -> str:
    text = dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _changed_input(name: str, old: Optional[dict], new: Optional[dict]) -> Optional[str]:
    if old is None or new is None:
        return None
    path = new["path"]
    if "from" in new and "from" in old:
        if new["from"] == old["from"]:
            return None
        return f"input {name}: {path} comes from step '{new.get('step')}', whose key changed"
    if "from" in new:
        return f"input {name}: {path} is now produced by step '{new.get('step')}' of this run"
    if "from" in old:
        return f"input {name}: {path} was produced by step '{old.get('step')}' before, now it is read as it is"
    if new.get("missing") != old.get("missing"):
        return f"input {name}: {path} {'disappeared' if new.get('missing') else 'appeared'}"
    if new.get("digest") == old.get("digest"):
        return None
    parts = []
    for field, what in (("files", "files"), ("bytes", "bytes"), ("newest", "newest mtime")):
        if old.get(field) != new.get(field):
            parts.append(f"{what} {old.get(field)} -> {new.get(field)}")
    return f"input {name}: {path} changed ({', '.join(parts) or 'content'})"


def explain(old: Optional[Mapping], new: Mapping, *, limit: int = 8) -> list:
    """What differs between an earlier key document ``old`` and ``new``: lines like
    ``param niter: 100 -> 200``, ``input ms: obs.ms changed (newest mtime ...)``, ``image ...``.
    ``old`` ``None``: ``["no earlier record of this step"]``."""
    if old is None:
        return ["no earlier record of this step"]
    lines: list = []
    if old.get("format") != new.get("format"):
        return [f"key format changed ({old.get('format')} -> {new.get('format')})"]
    ocab, ncab = old.get("cab") or {}, new.get("cab") or {}
    for field in ("name", "command", "flavour"):
        if ocab.get(field) != ncab.get(field):
            lines.append(f"cab {field}: {_short(ocab.get(field))} -> {_short(ncab.get(field))}")
    if not lines and ocab.get("definition") != ncab.get("definition"):
        lines.append(f"definition of cab '{ncab.get('name')}' changed")
    orun, nrun = old.get("run") or {}, new.get("run") or {}
    for field in ("backend", "image", "image_digest", "virtual_env"):
        if orun.get(field) != nrun.get(field):
            lines.append(f"{field.replace('_', ' ')}: {_short(orun.get(field))} -> {_short(nrun.get(field))}")
    oenv, nenv = orun.get("env") or {}, nrun.get("env") or {}
    for name in sorted(set(oenv) | set(nenv)):
        if oenv.get(name) != nenv.get(name):
            lines.append(f"environment {name}: {_short(oenv.get(name))} -> {_short(nenv.get(name))}")
    oparams, nparams = old.get("params") or {}, new.get("params") or {}
    for name in [*nparams, *(n for n in oparams if n not in nparams)]:
        if name not in oparams:
            lines.append(f"param {name}: now set to {_short(nparams[name])}")
        elif name not in nparams:
            lines.append(f"param {name}: no longer set (was {_short(oparams[name])})")
        elif oparams[name] != nparams[name]:
            lines.append(f"param {name}: {_short(oparams[name])} -> {_short(nparams[name])}")
    oin, nin = old.get("inputs") or {}, new.get("inputs") or {}
    for name, entries in nin.items():
        before = {e["path"]: e for e in oin.get(name) or []}
        for entry in entries:
            line = _changed_input(name, before.get(entry["path"]), entry)
            if line:
                lines.append(line)
    if not lines:
        lines.append("the key changed (no difference found in the recorded documents)")
    return lines if len(lines) <= limit else lines[:limit] + [f"... and {len(lines) - limit} more"]


__all__ = ["FORMAT", "canonical", "dumps", "digest", "cab_definition", "file_params", "absolute",
           "producer_of", "merge_provenance", "with_step", "image_of", "key_document", "step_key", "explain"]
