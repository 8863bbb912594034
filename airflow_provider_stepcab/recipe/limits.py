"""Limits that keep a hostile or broken recipe file from hanging or crashing the loader.

A recipe file dropped into a DAGs folder is parsed by the dag-processor together with every other
recipe of the folder, inside one import of the loader file: a file that takes minutes, or crashes
the interpreter, would hide every DAG of the folder. These limits bound the work one file can cause
(see ``docs/security.md``, "Loading limits"):

=========================  =========================  ==========  ===================================
setting                    environment variable        default     what it bounds
=========================  =========================  ==========  ===================================
``max_file_size``          ``STEPCAB_MAX_FILE_SIZE``    2 MiB       bytes of one recipe/include file
``max_nesting_depth``      ``STEPCAB_MAX_NESTING_DEPTH`` 100        nested mappings/lists of a document
``max_alias_nodes``        ``STEPCAB_MAX_ALIAS_NODES``  100000      nodes copies add: YAML aliases,
                                                                    ``${...}`` of sections, ``_use``
``max_string_length``      ``STEPCAB_MAX_STRING_LENGTH`` 1000000    characters an interpolation or a
                                                                    ``{}`` substitution may produce
``max_format_width``       ``STEPCAB_MAX_FORMAT_WIDTH`` 1000        width/precision of a ``{x:>N.M}``
=========================  =========================  ==========  ===================================

Each is read, in this order, from the environment variable, from Airflow config ``[stepcab]`` (the
key as in the first column; ``AIRFLOW__STEPCAB__MAX_FILE_SIZE`` ... work too), else the default.
Airflow is never imported here: its config is asked only when the process already imported it (the
dag-processor, workers, ``stepcab run``). Values are read at every use (cheap), so nothing global is
kept. ``max_file_size`` accepts a ``K``/``M``/``G`` suffix (powers of 1024).
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

#: the C YAML composer recurses once per nesting level: deeper limits are refused (a thread with a
#: 1 MiB stack composes ~3,000 levels before it overflows)
DEPTH_CEILING = 1000


class Limits(NamedTuple):
    """The loading limits in force (see the module docstring)."""

    max_file_size: int = 2 * 1024 * 1024
    max_nesting_depth: int = 100
    max_alias_nodes: int = 100_000
    max_string_length: int = 1_000_000
    max_format_width: int = 1000


DEFAULTS = Limits()
_ENV = {name: f"STEPCAB_{name.upper()}" for name in Limits._fields}
_UNITS = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def setting_names(name: str) -> str:
    """How a user sets limit ``name``, for error messages."""
    return f"{_ENV[name]} or [stepcab] {name}"


def _airflow_value(name: str) -> str | None:
    env = os.environ.get(f"AIRFLOW__STEPCAB__{name.upper()}")
    if env is not None:
        return env
    configuration = sys.modules.get("airflow.configuration")
    conf = getattr(configuration, "conf", None)
    if conf is None:
        return None
    try:
        return conf.get("stepcab", name, fallback=None)
    except Exception:  # noqa: BLE001 - a broken Airflow config: the default applies
        return None


def _parse(name: str, text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = _UNITS.get(text[-1:], 1) if name == "max_file_size" else 1
    if scale != 1:
        text = text[:-1]
    value = int(text.replace("_", "")) * scale
    if value <= 0:
        raise ValueError(value)
    return value


def current_limits() -> Limits:
    """The limits from the environment and Airflow config (a bad value: the default is used)."""
    values = {}
    for name in Limits._fields:
        raw = os.environ.get(_ENV[name])
        if raw is None:
            raw = _airflow_value(name)
        if raw is None or not str(raw).strip():
            continue
        try:
            values[name] = _parse(name, str(raw))
        except ValueError:
            continue
    if values.get("max_nesting_depth", 0) > DEPTH_CEILING:
        values["max_nesting_depth"] = DEPTH_CEILING
    return DEFAULTS._replace(**values) if values else DEFAULTS
