"""A DAGs folder with hostile recipe files keeps every other DAG (issue 15).

The folder holds the loader, one good recipe and every file of :mod:`hostile_files`; it is parsed
the way the dag-processor's parsing child does (``BundleDagBag`` in a fresh interpreter) with
Airflow's own import timeout of 30 s. The good DAG must be there, and each hostile file reported
as an import error of its own, with nothing of the secret file in any error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hostile_files as hf

pytestmark = pytest.mark.airflow
REPO = Path(__file__).resolve().parent.parent
LOADER = "from airflow_provider_stepcab.dag_factory import build_dags\n\nbuild_dags(globals())\n"

PARSE = textwrap.dedent('''
    import json, sys
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = sys.argv[1]
    bag = BundleDagBag(dag_folder=folder + "/stepcab_dags.py", bundle_path=folder, bundle_name="t",
                       load_op_links=False)
    print("RESULT " + json.dumps({"dags": sorted(bag.dags),
                                  "errors": {str(k): str(v) for k, v in bag.import_errors.items()}}))
''')


def parse(folder: Path, cache: Path) -> dict:
    env = dict(os.environ, STEPCAB_CACHE_DIR=str(cache), STEPCAB_RECIPE_FOLDERS="",
               AIRFLOW__STEPCAB__RECIPE_FOLDERS="", AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="30",
               PYTHONPATH=str(REPO))
    try:
        out = subprocess.run([sys.executable, "-c", PARSE, str(folder)], env=env, capture_output=True,
                             text=True, timeout=120, cwd=folder)
    except subprocess.TimeoutExpired:
        pytest.fail("the parse of the folder did not end within 120 s")
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-3000:]}"
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "stepcab_dags.py").write_text(LOADER)
    (dags / "good.yml").write_text(hf.GOOD_RECIPE)
    return dags


def test_the_good_dag_survives_every_hostile_file_at_once(folder, tmp_path):
    for writer in hf.ALL:
        writer(folder)
    for run in ("cold", "warm"):
        result = parse(folder, tmp_path / "cache")
        assert "good" in result["dags"], (run, result)
        text = json.dumps(result["errors"])
        assert "Timeout" not in text and "timed out" not in text.lower(), text[:3000]
        for word in hf.SECRET_WORDS:
            assert word not in text, (word, text[:3000])


@pytest.mark.parametrize("writer", hf.ALL, ids=[w.__name__ for w in hf.ALL])
def test_the_good_dag_survives_each_hostile_file(folder, tmp_path, writer):
    path = writer(folder)
    result = parse(folder, tmp_path / "cache")
    assert "good" in result["dags"], result
    # a FIFO is not a recipe file (discovery passes it over); a {} substitution is evaluated when
    # the step runs or is planned, not at parse time (test_loading_limits.py covers its cap)
    if writer not in (hf.fifo, hf.format_bomb):
        assert any(path.name in key or path.name in err for key, err in result["errors"].items()), result
