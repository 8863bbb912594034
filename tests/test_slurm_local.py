"""Slurm from the login node without SSH (``ssh_conn_id: local``), accounting, retries with more
resources and ``stepcab report`` — real Airflow (``dag.test()`` here, where this machine is the
cluster's login node, like a LocalExecutor or Edge worker there) against the real test cluster.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401
from test_native_operator import load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
RECIPE = Path(__file__).resolve().parent / "data" / "recipes" / "slurm_local.yml"

DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator

with DAG("stepcab_slurm_local", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
    count = StepcabSlurmOperator(task_id="count", recipe_file={recipe!r}, recipe_name="slurm_local",
                                 step_path=["count"])
    burn = StepcabSlurmOperator(task_id="burn", recipe_file={recipe!r}, recipe_name="slurm_local",
                                step_path=["burn"])
    count >> burn
"""


def sacct(*args: str) -> str:
    return subprocess.run(["sacct", "--noheader", "--parsable2", *args], capture_output=True, text=True,
                          check=True).stdout


def jobs_named(*names: str) -> list:
    out = sacct("--allocations", f"--name={','.join(names)}", "--starttime=now-1hour", "--format=JobIDRaw")
    return out.split()


@pytest.fixture(scope="module")
def local_dag(slurm_cluster, airflow_db, airflow_dags_folder):  # noqa: F811
    path = write_dag_file(airflow_dags_folder, "stepcab_slurm_local_dag.py", DAG_FILE.format(recipe=str(RECIPE)))
    return load_dags(path)["stepcab_slurm_local"]


def shared_workdir(cluster, name: str) -> Path:
    path = Path(cluster.work_dir) / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    path.chmod(0o1777)
    return path


@pytest.fixture(scope="module")
def finished_run(local_dag, slurm_cluster, tmp_path_factory):  # noqa: F811
    work = shared_workdir(slurm_cluster, "local")
    logs = tmp_path_factory.mktemp("logs") / "out.txt"
    run, states = run_dag(local_dag, work)
    return SimpleNamespace(run=run, states=states, work=work, logs=logs)


def test_local_submission_end_to_end(finished_run, capfd):
    assert finished_run.states == {"count": "success", "burn": "success"}, finished_run.states
    job = xcom(finished_run.run, "count", "slurm_job")
    assert job["ssh_conn_id"] == "local" and job["reattached"] is False
    assert jobs_named(job["job_name"]) == [job["job_id"]]
    # the wrapper's books are on this machine, in the local user's home (no SFTP involved)
    assert Path(job["job_dir"]).is_relative_to(Path.home())
    assert (Path(job["job_dir"]) / "exitcode").read_text().strip() == "0"
