"""DAG settings from a recipe file's ``opts.airflow`` section.

``opts`` is Stimela's config section, so ``opts.airflow`` is written at the top level of a recipe
file and applies to every recipe (DAG) of that file; like all of ``opts`` it is merged from included
files (the including file wins). Per-recipe values go under ``opts.airflow.recipes.<recipe name>``
and override the file-wide ones. Every key is optional::

    opts:
      airflow:
        dag_id: my_pipeline        # replaces the file-stem/recipe-name rule (naming.py)
        schedule: "@daily"         # cron string or preset; null/absent = manual runs only
        start_date: 2024-01-01     # date or ISO datetime (UTC unless it has an offset);
                                   # default 2024-01-01T00:00Z, never "now"
        end_date: 2025-01-01
        catchup: false             # default false
        retries: 2                 # per task (default 0)
        retry_delay: 5m            # per task; seconds or "90s", "5m", "1h30m", "2d", "HH:MM:SS"
        owner: radio-team          # default "stepcab"
        tags: [imaging]            # added to the tag "stepcab"
        max_active_runs: 1
        max_active_tasks: 8
        pool: cpu_pool             # per task
        queue: bigmem              # per task
        dagrun_timeout: 12h
        execution_timeout: 2h      # per task
        description: one line shown in the DAG list (default: first line of the recipe info)
        doc_md: extra Markdown shown above the generated inputs table
        parallel: sequential       # or "dataflow": infer dependencies from data flow (dataflow.py)
        backend: native            # parse-time backend preference handed to every step task
        build_images: false        # true: a first task "stepcab_build_images" builds (singularity)
                                   # or pulls (podman/docker) the images the steps' backends need,
                                   # skipping present ones, upstream of every step task
                                   # (operators/build.py; what `stepcab build` does)
        cache: false               # true: the step cache (docs/cache.md): a run skips every step whose
                                   # inputs, command and image are unchanged since a successful run
        cache_hash: false          # true: raw inputs enter cache keys by content, not size and mtime
        tasks:                     # per-task settings, keyed by dotted step path or glob
          "image*": {pool: gpu, execution_timeout: 6h, retries: 0, queue: gpu, priority_weight: 5}
          "predict": {cache: false}   # the step cache for these steps only (wins over ``cache``)
        recipes:
          other-recipe: {schedule: null, tags: [adhoc]}
        workdir: ...               # read by the operators (runtime/workdir.py), ignored here
        trigger_limits: {time: "4:00:00", mem: 64G}   # caps on trigger-time resource overrides
                                   # (operators/trigger_policy.py, docs/security.md), ignored here

Unknown keys are warnings; values of the wrong type are errors (the recipe is then reported as
broken, see :mod:`.errors`). No default ever skips backfilled runs (there is no ``latest_only``).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import field
from typing import Any, Optional

from airflow_provider_stepcab.recipe.errors import Loc, Problems
from airflow_provider_stepcab.recipe.records import record
from airflow_provider_stepcab.recipe.yamlio import loc_of

DEFAULT_START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_OWNER = "stepcab"
PARALLEL_MODES = ("sequential", "dataflow")
#: keys allowed in ``opts.airflow.tasks.<pattern>``
TASK_KEYS = ("pool", "queue", "retries", "retry_delay", "execution_timeout", "priority_weight", "cache")
#: task settings read by the step task when it runs (not operator arguments)
RUNTIME_TASK_KEYS = ("cache",)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# patterns as text: compiled (and cached by ``re``) on first use, not by every parse that imports this
_DURATION = r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhdw])\s*)+$"
_DURATION_PART = r"(\d+(?:\.\d+)?)\s*([smhdw])"


@record
class AirflowSettings:
    """Parsed ``opts.airflow`` for one recipe (see the module docstring for each key)."""

    dag_id: Optional[str] = None
    schedule: Optional[str] = None
    start_date: dt.datetime = DEFAULT_START_DATE
    end_date: Optional[dt.datetime] = None
    catchup: bool = False
    retries: Optional[int] = None
    retry_delay: Optional[dt.timedelta] = None
    owner: str = DEFAULT_OWNER
    tags: list = field(default_factory=list)
    max_active_runs: Optional[int] = None
    max_active_tasks: Optional[int] = None
    pool: Optional[str] = None
    queue: Optional[str] = None
    dagrun_timeout: Optional[dt.timedelta] = None
    execution_timeout: Optional[dt.timedelta] = None
    description: Optional[str] = None
    doc_md: Optional[str] = None
    parallel: str = "sequential"
    backend: Any = None
    build_images: bool = False
    cache: bool = False
    cache_hash: bool = False
    tasks: dict = field(default_factory=dict)   # pattern -> {key: value}

    def default_args(self) -> dict:
        """``default_args`` for the DAG (only the keys that are set)."""
        out: dict = {"owner": self.owner}
        for key in ("retries", "retry_delay", "pool", "queue", "execution_timeout"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def parse_duration(value: Any) -> dt.timedelta:
    """Parse seconds (number), ``"1h30m"``-style or ``"HH:MM[:SS]"`` text into a timedelta.

    :raises ValueError: for anything else.
    """
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration {value!r}")
        return dt.timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return dt.timedelta(seconds=float(text))
        if re.match(_DURATION, text):
            return dt.timedelta(seconds=sum(float(n) * _DURATION_UNITS[u]
                                            for n, u in re.findall(_DURATION_PART, text)))
        m = re.fullmatch(r"(\d+):(\d{1,2})(?::(\d{1,2}))?", text)
        if m:
            h, mi, s = (int(x or 0) for x in m.groups())
            return dt.timedelta(hours=h, minutes=mi, seconds=s)
    raise ValueError(f"expected a duration (seconds, '90s', '5m', '1h30m', '2d' or 'HH:MM:SS'), "
                     f"got {value!r}")


def parse_datetime(value: Any) -> dt.datetime:
    """Parse a date/datetime (YAML native or ISO text); naive values are taken as UTC."""
    if isinstance(value, dt.datetime):
        out = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            out = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected a date like 2024-01-01 or an ISO datetime, got {value!r}") from None
    else:
        raise ValueError(f"expected a date, got {value!r}")
    return out if out.tzinfo else out.replace(tzinfo=dt.timezone.utc)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _schedule(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "null")):
        return None
    return _str(v)


def _tags(v: Any) -> list:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(t, str) and t for t in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return list(v)


def _parallel(v: Any) -> str:
    if v not in PARALLEL_MODES:
        raise ValueError(f"expected one of {', '.join(PARALLEL_MODES)}, got {v!r}")
    return v


def _backend(v: Any) -> Any:
    if isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        return v if isinstance(v, str) else list(v)
    raise ValueError(f"expected a backend name or a list of names, got {v!r}")


_PARSERS = {
    "dag_id": _str, "schedule": _schedule, "start_date": parse_datetime, "end_date": parse_datetime,
    "catchup": _bool, "retries": _int, "retry_delay": parse_duration, "owner": _str, "tags": _tags,
    "max_active_runs": _int, "max_active_tasks": _int, "pool": _str, "queue": _str,
    "dagrun_timeout": parse_duration, "execution_timeout": parse_duration, "description": _str,
    "doc_md": _str, "parallel": _parallel, "backend": _backend, "build_images": _bool,
    "cache": _bool, "cache_hash": _bool,
}
_TASK_PARSERS = {"pool": _str, "queue": _str, "retries": _int, "retry_delay": parse_duration,
                 "execution_timeout": parse_duration, "priority_weight": _int, "cache": _bool}
_IGNORED = ("workdir", "trigger_limits")  # read by the operators (runtime/workdir.py, operators/trigger_policy.py)


def _apply(section: Any, key_path: str, out: AirflowSettings, problems: Problems, fallback: Loc) -> None:
    for key, value in section.items():
        where, loc = f"{key_path}.{key}", loc_of(section, key) if hasattr(section, "key_locs") else fallback
        if key in ("recipes",) or key in _IGNORED:
            continue
        if key == "tasks":
            _apply_tasks(value, where, out, problems, loc)
            continue
        parser = _PARSERS.get(key)
        if parser is None:
            problems.warning(loc, where, f"unknown Airflow setting '{key}' (known: "
                             f"{', '.join(sorted([*_PARSERS, 'tasks', 'recipes', *_IGNORED]))})",
                             "unknown-key")
            continue
        try:
            setattr(out, key, parser(value))
        except ValueError as exc:
            problems.error(loc, where, str(exc), "bad-airflow-setting")


def _apply_tasks(value: Any, key_path: str, out: AirflowSettings, problems: Problems, loc: Loc) -> None:
    if not isinstance(value, dict):
        problems.error(loc, key_path, "expected a mapping of step path (or glob) -> settings",
                       "bad-airflow-setting")
        return
    for pattern, entry in value.items():
        where = f"{key_path}.{pattern}"
        eloc = loc_of(value, pattern)
        if not isinstance(entry, dict):
            problems.error(eloc, where, f"expected a mapping with keys {', '.join(TASK_KEYS)}",
                           "bad-airflow-setting")
            continue
        parsed = dict(out.tasks.get(str(pattern), {}))
        for key, v in entry.items():
            parser = _TASK_PARSERS.get(key)
            if parser is None:
                problems.warning(loc_of(entry, key), f"{where}.{key}",
                                 f"unknown task setting '{key}' (known: {', '.join(TASK_KEYS)})", "unknown-key")
                continue
            try:
                parsed[key] = parser(v)
            except ValueError as exc:
                problems.error(loc_of(entry, key), f"{where}.{key}", str(exc), "bad-airflow-setting")
        out.tasks[str(pattern)] = parsed


def task_settings(settings: AirflowSettings, path: tuple) -> dict:
    """The ``tasks.<pattern>`` settings of the step at ``path``: ``*`` first, then globs, then
    the exact dotted path (later ones win)."""
    dotted = ".".join(path)
    ranked = []
    for pattern, values in settings.tasks.items():
        if pattern == dotted:
            ranked.append((2, values))
        elif fnmatch.fnmatchcase(dotted, pattern):
            ranked.append((0 if pattern == "*" else 1, values))
    out: dict = {}
    for _, values in sorted(ranked, key=lambda x: x[0]):
        out.update(values)
    return out


def airflow_section(tree: Any) -> Any:
    """Return ``opts.airflow`` of a merged config tree (``{}`` when absent)."""
    opts = tree.get("opts") if isinstance(tree, dict) else None
    section = opts.get("airflow") if isinstance(opts, dict) else None
    return section if section is not None else {}


def parse_settings(section: Any, recipe_name: str, problems: Problems, *,
                   loc: Loc = Loc("<unknown>", 0)) -> AirflowSettings:
    """Parse ``opts.airflow`` (``section``) for ``recipe_name``.

    :param section: the ``opts.airflow`` mapping (may be empty).
    :param recipe_name: the recipe whose ``recipes.<name>`` overrides apply.
    :param problems: receives unknown keys (warnings) and bad values (errors).
    :param loc: fallback location for problems.
    """
    out = AirflowSettings()
    if not isinstance(section, dict):
        problems.error(loc_of(section) if hasattr(section, "loc") else loc, "opts.airflow",
                       "expected a mapping", "bad-airflow-setting")
        return out
    _apply(section, "opts.airflow", out, problems, loc)
    per_recipe = section.get("recipes") or {}
    if not isinstance(per_recipe, dict):
        problems.error(loc_of(section, "recipes"), "opts.airflow.recipes",
                       "expected a mapping of recipe name -> settings", "bad-airflow-setting")
        return out
    own = per_recipe.get(recipe_name)
    if own is not None:
        if isinstance(own, dict):
            _apply(own, f"opts.airflow.recipes.{recipe_name}", out, problems, loc)
        else:
            problems.error(loc_of(per_recipe, recipe_name), f"opts.airflow.recipes.{recipe_name}",
                           "expected a mapping", "bad-airflow-setting")
    return out
