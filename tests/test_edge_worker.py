"""A real Airflow Edge worker on "the login node" (this machine) running Slurm steps locally.

``airflow standalone`` (API server, scheduler with the EdgeExecutor, DAG processor, triggerer) is
the central site; ``scripts/edge-worker.sh`` starts ``airflow edge worker`` for the ``edge`` queue
with its own home and *no* metadata database (only the API URL and the shared JWT secret), as a
user would on a cluster's login node. The DAG's Slurm steps (``ssh_conn_id: local``) go to the edge
queue: the worker submits with the local ``sbatch`` and waits there. A run completes; marking a
running task failed (a user killing it) makes the worker kill the task, which cancels its job.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from airflow_harness import VENV_BIN, Standalone, _group_alive
from slurm_cluster import slurm_cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.airflow]
REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "tests" / "data" / "recipes" / "slurm_local.yml"
WORKER = REPO / "scripts" / "edge-worker.sh"
DAG_ID = "edge_slurm_local"
EDGE = "airflow.providers.edge3.executors.EdgeExecutor"

DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator

with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
    for label in ("count", "wait"):
        StepcabSlurmOperator(task_id=label, recipe_file={recipe!r}, recipe_name="slurm_local",
                             step_path=[label], queue="edge", executor={executor!r})
"""


@pytest.fixture(scope="module")
def edge_site(slurm_cluster, tmp_path_factory):  # noqa: F811
    pytest.importorskip("airflow.providers.edge3", reason="apache-airflow-providers-edge3 is not installed")
    base = tmp_path_factory.mktemp("edge")
    dags = base / "dags"
    dags.mkdir()
    (dags / "edge_slurm_local.py").write_text(DAG_FILE.format(dag_id=DAG_ID, recipe=str(RECIPE), executor=EDGE))
    work = Path(slurm_cluster.work_dir) / f"edge-{os.getpid()}"
    work.mkdir(exist_ok=True)
    work.chmod(0o1777)
    secret = secrets.token_hex(32)
    site = Standalone(base, dags, env={
        # standalone forces LocalExecutor unless the default executor is local: the Edge executor is
        # the second one, chosen by the DAG's Slurm tasks (executor=..., queue="edge")
        "AIRFLOW__CORE__EXECUTOR": f"LocalExecutor,{EDGE}",
        "AIRFLOW__EDGE__API_ENABLED": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
        "AIRFLOW__STEPCAB__WORKDIR": str(work)})
    site.env["AIRFLOW__EDGE__API_URL"] = f"{site.url}/edge_worker/v1/rpcapi"
    site.start()
    secret_file = base / "jwt_secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    worker_home = base / "worker-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"STEPCAB_EDGE_API_URL": site.url, "STEPCAB_EDGE_SECRET_FILE": str(secret_file),
                "STEPCAB_DAGS_FOLDER": str(dags), "STEPCAB_EDGE_CONCURRENCY": "2", "STEPCAB_EDGE_NAME": "login-node",
                "AIRFLOW_HOME": str(worker_home), "STEPCAB_VENV": str(VENV_BIN.parent),
                "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1", "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": "3",
                "AIRFLOW__STEPCAB__WORKDIR": str(work)})
    log = open(base / "edge-worker.log", "wb")
    worker = subprocess.Popen(["bash", str(WORKER)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    site.worker_log = base / "edge-worker.log"
    site.work = work
    try:
        yield site
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(worker.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _group_alive(worker.pid):
                time.sleep(0.3)
        worker.wait(10)
        site.stop()


def _worker_log(site) -> str:
    return site.worker_log.read_text(errors="replace")[-4000:]


def test_edge_worker_runs_local_slurm_steps_and_a_kill_cancels_the_job(edge_site):
    site = edge_site
    site.wait_dag(DAG_ID, timeout=180)
    run_id = site.trigger(DAG_ID)
    run = site.wait_dag_run(DAG_ID, run_id, timeout=300)
    assert run["state"] == "success", site.failure_report(DAG_ID, run_id) + _worker_log(site)
    log = site.task_log(DAG_ID, run_id, "count")
    assert "count 3 of 3" in log and "via local" in log and "resources (sacct, job" in log, log[-3000:]
    tis = {ti["task_id"]: ti for ti in site.task_instances(DAG_ID, run_id)}
    assert tis["count"]["queue"] == "edge" and tis["count"]["executor"] == EDGE, tis["count"]
    worker_log = _worker_log(site)
    assert "count" in worker_log and run_id in worker_log, worker_log   # the Edge worker ran it

    # a task waiting on its job, killed by a user: the job is cancelled
    from airflow_provider_stepcab.plan.sbatch import job_name

    run_id = site.trigger(DAG_ID, conf={"select": ["wait"]}, unpause=False)
    name = job_name(DAG_ID, run_id, "wait", -1, 1)
    deadline, job_id = time.monotonic() + 240, None
    while time.monotonic() < deadline and not job_id:
        out = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i %T"], capture_output=True,
                             text=True).stdout.split()
        job_id = out[0] if out and out[1] == "RUNNING" else None
        time.sleep(1)
    assert job_id, site.failure_report(DAG_ID, run_id) + _worker_log(site)
    site.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/wait", {"new_state": "failed"})
    deadline, state = time.monotonic() + 120, ""
    while time.monotonic() < deadline and not state.startswith("CANCELLED"):
        state = subprocess.run(["sacct", "-X", "-n", "-P", f"--jobs={job_id}", "--format=State"],
                               capture_output=True, text=True).stdout.strip()
        time.sleep(1)
    assert state.startswith("CANCELLED"), f"job {job_id} is {state!r}\n{_worker_log(site)}"
    assert not (site.work / "release").exists()
