"""The embedded SQLite metadata database of ``stepcab run``, without migrating it on every run.

``airflow db migrate`` (``initdb``) takes seconds even when there is nothing to do. A home whose
database was set up by this Airflow version (a marker file beside it says which) is used as it
is; any other home is migrated once.
"""

from __future__ import annotations

from pathlib import Path

DB_NAME = "airflow.db"
MARKER = "airflow.db.stepcab-version"


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def prepare_database(home: Path) -> str:
    """Make ``home/airflow.db`` ready for ``dag.test()``; returns ``reused`` or ``migrated``.
    Call after ``AIRFLOW_HOME`` points at ``home``."""
    version = airflow_version()
    db_file, marker = home / DB_NAME, home / MARKER
    if db_file.exists() and marker.exists() and marker.read_text().strip() == version:
        return "reused"
    from airflow.utils import db

    db.initdb()
    marker.write_text(version)
    return "migrated"
