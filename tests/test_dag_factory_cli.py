"""End to end through the ``airflow`` CLI (own AIRFLOW_HOME, dags folder = a copy of the fixture).

``airflow dags reserialize`` parses the folder with the DAG processor's bundle machinery and writes
DAGs and import errors to the metadata DB; ``airflow dags list-import-errors`` must then list
exactly the two broken recipe files (bundle-relative paths) and ``airflow dags list`` the good DAGs.
The slow test runs the looping DAG with the real native operator (``airflow dags test``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow
FOLDER = Path(__file__).resolve().parent / "data" / "dagfolder"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    shutil.copytree(FOLDER, dags)
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", PATH=f"{BIN}:{os.environ.get('PATH', '')}",
               AIRFLOW__STEPCAB__WORKDIR=str(home / "work"))
    env.pop("_AIRFLOW_PARSING_CONTEXT_DAG_ID", None)

    def run(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
        out = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True,
                             timeout=timeout, cwd=str(home))
        if check:
            assert out.returncode == 0, f"airflow {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    run("db", "migrate")
    run("dags", "reserialize", check=False)  # exits non-zero when any file has import errors
    run.dags = dags
    return run


def _json(text: str):
    for line in reversed(text.splitlines()):  # log lines may precede the JSON document
        if line.startswith("[{") or line.strip() == "[]":
            return json.loads(line)
    raise AssertionError(f"no JSON list in output:\n{text}")


def test_list_import_errors_shows_exactly_the_broken_recipe_files(cli):
    out = cli("dags", "list-import-errors", "-o", "json", check=False)
    errors = {e["filepath"]: e["error"] for e in _json(out.stdout)}
    assert set(errors) == {"bad_cab.yml", "broken_yaml.yml"}
    assert "bad_cab.yml:8: badcab.steps.bad.cab: unknown cab 'no_such_cab'" in errors["bad_cab.yml"]
    assert "broken_yaml.yml:6:" in errors["broken_yaml.yml"]


def test_dags_list_has_the_good_recipes(cli):
    out = cli("dags", "list", "-o", "json")
    ids = {d["dag_id"] for d in _json(out.stdout)}
    assert ids == {"pipeline", "multi", "multi__alpha", "withdefault", "loops", "loops__toploop", "dataflow"}


@pytest.mark.slow
def test_looping_dag_runs(cli):
    out = cli("dags", "test", "loops", timeout=600)
    text = out.stdout + out.stderr
    assert "for_loop values: ['a.ms', 'b.ms']" in text
    assert "DagRun Finished: dag_id=loops" in text and "state=success" in text.split("DagRun Finished")[-1]
