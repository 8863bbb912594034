"""The working directory of a recipe run.

Stimela runs every step in the directory ``stimela run`` was started from, and
relative paths in parameters (``ms: data/obs.ms``) mean "relative to there".
An Airflow worker has no such directory, so every DAG run gets one, chosen by
the first of these that is set (highest precedence first):

1. the run's conf or DAG param ``stepcab_workdir`` (``stepcab run`` sets it to
   the current directory, exactly like ``stimela run``);
2. the recipe file's ``opts.airflow.workdir``;
3. the deployment setting: Airflow config ``[stepcab] workdir`` (that is, env
   ``AIRFLOW__STEPCAB__WORKDIR``) or env ``STEPCAB_WORKDIR``;
4. the default for scheduled runs, ``$AIRFLOW_HOME/stepcab-runs/{dag_id}/{run_id}``,
   a fresh directory per run, so that concurrent runs never clobber each other.

Every value may use the placeholders ``{dag_id}``, ``{run_id}``, ``{recipe}``
and ``{airflow_home}``, as well as ``~`` and ``$VARS``; a relative value is taken
relative to ``$AIRFLOW_HOME``. Run ids such as ``manual__2026-01-01T00:00:00+00:00``
are made filesystem-safe first. The directory is created when missing.

This module does I/O but never imports Airflow: the caller passes the Airflow
config value in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

#: Name of the DAG param / conf key that chooses the working directory.
WORKDIR_PARAM = "stepcab_workdir"
#: Environment variable read when Airflow config has no ``[stepcab] workdir``.
WORKDIR_ENV = "STEPCAB_WORKDIR"
#: Default template, relative to ``$AIRFLOW_HOME``.
DEFAULT_TEMPLATE = "stepcab-runs/{dag_id}/{run_id}"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Workdir:
    """The chosen working directory and where the choice came from.

    :param path: absolute path (created).
    :param source: ``"conf"``, ``"recipe"``, ``"config"``, ``"env"`` or ``"default"``.
    """

    path: Path
    source: str

    def resolve(self, value: str) -> str:
        """Return ``value`` (a path) made absolute against this directory."""
        expanded = os.path.expanduser(str(value))
        return expanded if os.path.isabs(expanded) else str(self.path / expanded)


def safe_component(text: str) -> str:
    """Make ``text`` usable as one path component (run ids contain ``:`` and ``+``)."""
    cleaned = _UNSAFE.sub("_", str(text)).strip("._")
    return cleaned or "_"


def default_airflow_home(env: Mapping[str, str] = os.environ) -> str:
    """``$AIRFLOW_HOME``, or Airflow's own default ``~/airflow``."""
    return env.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def expand_template(template: str, *, dag_id: str = "", run_id: str = "", recipe: str = "",
                    airflow_home: str = "") -> str:
    """Fill the ``{dag_id}``/``{run_id}``/``{recipe}``/``{airflow_home}`` placeholders of ``template``.

    :raises ValueError: naming an unknown placeholder.
    """
    values = {"dag_id": safe_component(dag_id) if dag_id else "",
              "run_id": safe_component(run_id) if run_id else "",
              "recipe": safe_component(recipe) if recipe else "",
              "airflow_home": airflow_home}
    try:
        return os.path.expandvars(os.path.expanduser(str(template).format(**values)))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"working directory {template!r}: bad placeholder {exc}; "
                         f"use {{dag_id}}, {{run_id}}, {{recipe}} or {{airflow_home}}") from None


def recipe_workdir_setting(opts: Any) -> Optional[str]:
    """Return ``opts.airflow.workdir`` from a loaded config's ``opts`` mapping, if set."""
    if isinstance(opts, Mapping):
        airflow = opts.get("airflow")
        if isinstance(airflow, Mapping) and airflow.get("workdir"):
            return str(airflow["workdir"])
    return None


def choose_workdir(*, dag_id: str, run_id: str, recipe: str = "",
                   conf_value: Optional[str] = None, recipe_value: Optional[str] = None,
                   config_value: Optional[str] = None, env: Mapping[str, str] = os.environ,
                   airflow_home: Optional[str] = None, create: bool = True) -> Workdir:
    """Choose (and create) the working directory of one DAG run.

    :param dag_id: the DAG id (placeholder ``{dag_id}``).
    :param run_id: the DAG run id (placeholder ``{run_id}``).
    :param recipe: the recipe name (placeholder ``{recipe}``).
    :param conf_value: ``stepcab_workdir`` from the run conf / DAG params.
    :param recipe_value: the recipe's ``opts.airflow.workdir``.
    :param config_value: Airflow config ``[stepcab] workdir``.
    :param env: environment to read ``STEPCAB_WORKDIR``/``AIRFLOW_HOME`` from.
    :param airflow_home: overrides ``$AIRFLOW_HOME``.
    :param create: create the directory when it does not exist.
    :returns: the :class:`Workdir`.
    """
    home = airflow_home or default_airflow_home(env)
    candidates = [("conf", conf_value), ("recipe", recipe_value), ("config", config_value),
                  ("env", env.get(WORKDIR_ENV)), ("default", DEFAULT_TEMPLATE)]
    source, template = next((s, v) for s, v in candidates if v not in (None, ""))
    text = expand_template(template, dag_id=dag_id, run_id=run_id, recipe=recipe, airflow_home=home)
    path = Path(text) if os.path.isabs(text) else Path(home) / text
    path = Path(os.path.normpath(path))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return Workdir(path=path, source=source)
