"""``stepcab run`` as a drop-in for ``stimela run``: same steps run, exit codes, log files.

Each run is a subprocess through real Airflow ``dag.test()``; the oracle's ``stimela run`` runs the
same recipe (tests/data/cli/selection.yml) with the same arguments and must run the same steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stimela_run import SELECTION_RECIPE, ran_names, ran_paths, stimela_run

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[1]
SKIPS_RECIPE = ROOT / "tests" / "data" / "cli" / "skips.yml"


def stepcab_run(workdir: Path, *args: str, home: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["STEPCAB_AIRFLOW_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "run", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("args", [
    ["-s", "sub.x", "-t", "calibrate", "-e", "held"],
    ["-s", "held", "-k", "sub.z", "-s", "loop.p", "-s", "c"],
], ids=["select-tags-enable", "unskip-never-loop"])
def test_same_steps_and_log_files_as_stimela(args, tmp_path):
    oracle = stimela_run(tmp_path / "stimela", *args)
    ours = stepcab_run(tmp_path / "stepcab", str(SELECTION_RECIPE), "-N", *args, home=tmp_path / "home")
    assert ours.returncode == oracle.returncode == 0, ours.stderr[-3000:]
    assert ran_paths(tmp_path / "stepcab") == ran_paths(tmp_path / "stimela")
    assert sorted(ran_names(tmp_path / "stepcab")) == sorted(ran_names(tmp_path / "stimela"))
    # Stimela's per-step log files: one per recipe level and per step that ran
    theirs = {p.name for p in (tmp_path / "stimela").glob("log-selection-demo*.txt")}
    mine = {p.name for p in (tmp_path / "stepcab").glob("log-selection-demo*.txt")}
    assert mine == theirs
    assert (tmp_path / "stepcab" / "log-stimela.txt").exists()


def test_log_directory_substituted_from_the_recipe_as_stimela_does(tmp_path):
    recipe = ROOT / "tests" / "data" / "cli" / "logdir.yml"
    oracle = stimela_run(tmp_path / "stimela", "dir_out=out1", recipe=recipe)
    ours = stepcab_run(tmp_path / "stepcab", str(recipe), "-N", "dir_out=out1", home=tmp_path / "home")
    assert ours.returncode == oracle.returncode == 0, ours.stderr[-3000:]

    def logs(where: Path) -> set:
        return {str(p.relative_to(where)).replace(time.strftime("%Y%m%d"), "DATE")
                for p in where.rglob("log-logdir-demo*.txt")}

    # the steps' files under the input's directory; the recipe's own is named before its inputs
    # are known ({root.dir_out} empty), the command's log-stimela.txt stays where it was
    assert logs(tmp_path / "stepcab") == logs(tmp_path / "stimela") == {
        "logs/log-DATE/log-logdir-demo.txt", "out1/logs/log-DATE/log-logdir-demo.a.txt",
        "out1/logs/log-DATE/log-logdir-demo.b.txt"}
    assert (tmp_path / "stepcab" / "log-stimela.txt").exists() and (tmp_path / "stimela" / "log-stimela.txt").exists()


def test_exit_codes_dry_run_and_nothing_selected(tmp_path):
    home = tmp_path / "home"
    bad = stepcab_run(tmp_path / "bad", str(SELECTION_RECIPE), "-s", "nope", home=home)
    assert bad.returncode == stimela_run(tmp_path / "bad-s", "-s", "nope").returncode == 1
    assert "'nope' not in the top recipe" in bad.stderr
    dry = stepcab_run(tmp_path / "dry", str(SELECTION_RECIPE), "-d", "-s", "sub.x", home=home)
    assert dry.returncode == 0 and "selection-demo.sub: enabled: x" in dry.stderr
    assert ran_names(tmp_path / "dry") == [] and not (home / "airflow.db").exists()  # Airflow never started
    none = stepcab_run(tmp_path / "none", str(SELECTION_RECIPE), "-s", "a", "-k", "a", "-k", "prep", home=home)
    assert none.returncode == 0 and "no steps have been selected" in none.stderr
    usage = stepcab_run(tmp_path / "usage", str(SELECTION_RECIPE), "-p", "novalue", home=home)
    assert usage.returncode == 2 and "expected NAME=VALUE" in usage.stderr


def test_name_value_and_dash_p_agree(tmp_path):
    """``words=[b,a]`` positional, ``-p words=[b,a]`` and ``-a words [b,a]`` set the same input."""
    recipe = str(ROOT / "example_recipes" / "text-pipeline.yml")
    home = tmp_path / "home"
    outputs = []
    for name, args in {"positional": ["words=[beta, alpha]", "prefix=x"],
                       "dash-p": ["-p", "words=[beta, alpha]", "-p", "prefix=x", "-p", "3"],
                       "assign": ["-a", "words", "[beta, alpha]", "-a", "prefix", "x"]}.items():
        proc = stepcab_run(tmp_path / name, recipe, *args, home=home)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append((tmp_path / name / "x-sorted.txt").read_text())
        if name == "dash-p":
            assert "profiling results" in proc.stderr  # -p 3 is Stimela's profiling depth
    assert outputs == ["alpha\nbeta\n"] * 3


def _outputs_already_there(workdir: Path) -> Path:
    """The state tests/data/cli/skips.yml expects: exist.txt there, fresh.txt newer than input.txt."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.txt").write_text("in\n")
    os.utime(workdir / "input.txt", (1_500_000_000, 1_500_000_000))
    (workdir / "exist.txt").write_text("x\n")
    (workdir / "fresh.txt").write_text("y\n")
    return workdir


@pytest.mark.parametrize("args", [["-F"], ["-f"], ["-e", "exist"]],
                         ids=["disable-exist-skips", "disable-fresh-skips", "enable-step-clears-skip-if-outputs"])
def test_skip_if_outputs_options_as_stimela(args, tmp_path):
    """-f/-F switch off skip_if_outputs: fresh/exist, and -e runs a step whose outputs exist."""
    oracle = stimela_run(_outputs_already_there(tmp_path / "stimela"), *args, recipe=SKIPS_RECIPE)
    ours = stepcab_run(_outputs_already_there(tmp_path / "stepcab"), str(SKIPS_RECIPE), "-N", *args,
                       home=tmp_path / "home")
    assert ours.returncode == oracle.returncode == 0, ours.stderr[-3000:]
    assert ran_names(tmp_path / "stepcab") == ran_names(tmp_path / "stimela")
    assert len(ran_names(tmp_path / "stepcab")) == 2  # `always` and the step the option lets run


def test_in_process_execution_api_serves_the_task_sdk_version_only(tmp_path):
    """run_execution_api.prebuild() takes effect with this Airflow (else runs silently fall back
    to building all nine API versions, ~5 s), and the app it builds answers the SDK's version."""
    code = """
import json
from airflow_provider_stepcab.run_execution_api import prebuild
from airflow.sdk.api.client import API_VERSION
from airflow.sdk.execution_time.supervisor import in_process_api_server
from fastapi.testclient import TestClient
assert prebuild() is True
app = in_process_api_server().app
with TestClient(app) as client:
    response = client.get("/health/ping", headers={"Airflow-API-Version": API_VERSION})
print(json.dumps([response.status_code, sorted(app.router.versioned_routers), API_VERSION]))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status, served, wanted = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served == [wanted] and status == 200
