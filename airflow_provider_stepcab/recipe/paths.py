"""Path parameters as Stimela 2.1.4 passes them (its ``URI`` type).

A ``File``/``Directory``/``MS``/``URI`` value (or each element of a list of them) is made absolute
(``~`` expanded) and then written relative to the run directory when it lies inside it, else kept
absolute: ``./data/in.txt`` → ``data/in.txt``, ``data/`` → ``data``, ``../msdir/a.ms`` → ``/abs/msdir/a.ms``.
Remote URIs (``s3://…``) are left alone. Stimela also resolves symbolic links; that needs the
filesystem, so it happens only when ``resolve`` is true (at run time). Pure otherwise.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def normalise_path(text: str, cwd: str, *, resolve: bool = False) -> str:
    """One path as Stimela writes it (see the module docstring)."""
    if not isinstance(text, str) or not text or _SCHEME.match(text) and not text.startswith("file://"):
        return text
    path = text[len("file://"):] if text.startswith("file://") else text
    path = os.path.expanduser(path)
    full = os.path.realpath(os.path.join(cwd, path)) if resolve else \
        os.path.normpath(os.path.join(cwd, path))
    base = os.path.realpath(cwd) if resolve else os.path.normpath(cwd)
    if full == base:
        return "."
    if full.startswith(base.rstrip(os.sep) + os.sep):
        return full[len(base.rstrip(os.sep)) + 1:]
    return full


def normalise_params(schema: Mapping[str, Any], values: dict, cwd: str, *, resolve: bool = False,
                     skip: Any = None) -> dict:
    """``values`` with every path-typed parameter normalised (others, and ``skip(value)`` ones, as is)."""
    out = dict(values)
    for name, value in values.items():
        p = schema.get(name)
        dtype = getattr(p, "dtype", None)
        if dtype is None or not dtype.is_file_type or (skip is not None and skip(value)):
            continue
        if isinstance(value, str):
            out[name] = normalise_path(value, cwd, resolve=resolve)
        elif isinstance(value, (list, tuple)) and dtype.is_file_list:
            out[name] = [normalise_path(v, cwd, resolve=resolve) if isinstance(v, str) else v for v in value]
    return out


__all__ = ["normalise_path", "normalise_params"]
