"""StepcabSlurmOperator through real Airflow (``dag.test()``) against the real Slurm cluster.

The DAG is hand-written (one StepcabSlurmOperator per step of ``example_recipes/slurm_demo.yml``);
``dag.test()`` runs the deferred trigger inline, so the whole submit → wait → finish path runs.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401
from test_native_operator import load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
RECIPE = Path(__file__).resolve().parent.parent / "example_recipes" / "slurm_demo.yml"

DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator

with DAG("stepcab_slurm_demo", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
    prev = None
    for label in ("report", "count", "fail", "overtime", "wait"):
        t = StepcabSlurmOperator(task_id=label, recipe_file={recipe!r}, recipe_name="slurm_demo",
                                 step_path=[label])
        if prev is not None:
            prev >> t
        prev = t
"""


@pytest.fixture(scope="module")
def demo(slurm_cluster, airflow_db, airflow_dags_folder):  # noqa: F811
    path = write_dag_file(airflow_dags_folder, "stepcab_slurm_demo_dag.py", DAG_FILE.format(recipe=str(RECIPE)))
    return load_dags(path)["stepcab_slurm_demo"]


def shared_workdir(cluster, name: str) -> Path:
    """A working directory both root (the worker) and the cluster user can write."""
    path = Path(cluster.work_dir) / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    path.chmod(0o1777)
    return path


def test_success_outputs_visible_and_dependencies_first(demo, slurm_cluster, capfd):  # noqa: F811
    work = shared_workdir(slurm_cluster, "ok")
    run, states = run_dag(demo, work, {"who": "slurm-test"})
    cap = capfd.readouterr()
    out = cap.out + cap.err
    assert states["report"] == "success" and states["count"] == "success", states
    assert states["fail"] == "skipped" and states["overtime"] == "skipped"
    assert (work / "report.txt").read_text() == "report for slurm-test\n"   # output file visible
    assert xcom(run, "report") == {"report": "report.txt"}
    job = xcom(run, "report", "slurm_job")
    assert job["job_id"].isdigit() and job["job_name"].startswith("sc-stepcab_slurm_demo.report.t1")
    # remote_dependencies ran before the command, in the same shell (GREETING exported)
    stdout = Path(job["job_dir"], "stdout.log").read_text()
    assert stdout.index("dependencies ran on") < stdout.index("GREETING=hello-from-remote-dependencies")
    assert "GREETING=hello-from-remote-dependencies" in out                  # streamed into the log
    assert "count 3 of 3" in out


def test_nonzero_exit_names_exit_code_and_last_lines(demo, slurm_cluster, capfd):  # noqa: F811
    work = shared_workdir(slurm_cluster, "fail")
    run, states = run_dag(demo, work, {"select": ["fail"]})
    out = capfd.readouterr().out
    assert states["fail"] == "failed" and run.state == "failed", states
    assert "exit code 7" in out
    assert re.search(r"--- last output lines ---\n(.*\n)*?fail-line-5", out), out[-3000:]
    assert "to stderr" in out


def test_timeout_says_timeout(demo, slurm_cluster, capfd):  # noqa: F811
    work = shared_workdir(slurm_cluster, "timeout")
    start = time.monotonic()
    run, states = run_dag(demo, work, {"select": ["overtime"]})
    out = capfd.readouterr().out
    assert states["overtime"] == "failed", states
    assert "TIMEOUT" in out and "time limit" in out
    assert time.monotonic() - start < 150
