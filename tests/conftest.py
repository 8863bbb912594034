"""Shared pytest configuration.

- Markers: ``airflow`` (real Airflow in-process), ``slow`` (starts services), ``browser`` (headless chromium).
- Airflow in the test process never touches ``~/airflow``: before anything imports Airflow, this file
  points ``AIRFLOW_HOME`` at a fresh temporary directory (with an empty dags folder and no example DAGs).
  Tests that need the metadata database ask for the ``airflow_db`` fixture (``airflow db migrate``
  once per session, ~4 s).  ``dag.test()`` needs the DAG file inside the configured dags folder: write
  it into ``airflow_dags_folder``.
- ``standalone`` (from :mod:`airflow_harness`): one real ``airflow standalone`` per session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# --- isolate Airflow before it can be imported ---------------------------------------------------
if "airflow" in sys.modules:  # pragma: no cover - a plugin imported Airflow before us
    sys.stderr.write("conftest: warning: airflow was imported before tests/conftest.py set AIRFLOW_HOME\n")

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="stepcab-airflow-home-"))
_SESSION_DAGS = _SESSION_HOME / "dags"
_SESSION_DAGS.mkdir()
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)

os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_SESSION_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__STEPCAB__WORKDIR", str(_SESSION_HOME / "work"))
# `airflow` subcommands started by tests (and by Airflow itself) come from this venv.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airflow_harness import standalone  # noqa: E402,F401  (session fixture, re-exported)

MARKERS = {
    "airflow": "runs real Airflow in-process (dag.test, DagBag)",
    "slow": "starts services (airflow standalone, slurm, podman)",
    "browser": "drives headless chromium",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's in-process ``AIRFLOW_HOME`` (a temporary directory)."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def airflow_dags_folder() -> Path:
    """The configured dags folder of the in-process Airflow (empty at start)."""
    return _SESSION_DAGS


@pytest.fixture(scope="session")
def airflow_db(airflow_home) -> Path:
    """Create the in-process Airflow's SQLite metadata database once per session."""
    out = subprocess.run([os.path.join(_BIN, "airflow"), "db", "migrate"], env=dict(os.environ),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"airflow db migrate failed:\n{out.stdout}\n{out.stderr}"
    return airflow_home

