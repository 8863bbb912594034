"""The embedded SQLite metadata database of ``stepcab run``, without migrating it on every run.

``airflow db migrate`` (``initdb``) takes seconds even when there is nothing to do. A home whose
database was set up by this Airflow version (a marker file beside it says which) is used as it
is; any other home is migrated once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DB_NAME = "airflow.db"
MARKER = "airflow.db.stepcab-version"


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def fast_commits() -> None:
    """The embedded SQLite database commits without waiting for the disk (``PRAGMA
    synchronous=OFF``): ``dag.test()`` commits a dozen times per task. A crash of the machine
    mid-run can leave the database damaged; it is this scratch home's only (delete the home).
    Call after Airflow configured its engines and before they connect."""
    from airflow import settings
    from sqlalchemy import event

    for engine in (settings.engine, getattr(settings.async_engine, "sync_engine", None)):
        if engine is not None and engine.dialect.name == "sqlite" and not event.contains(engine, "connect", _no_sync):
            event.listen(engine, "connect", _no_sync)
            engine.dispose()  # connections made before now get no PRAGMA


def _no_sync(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()


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
