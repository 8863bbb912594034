"""The example recipes through Airflow run "for real": PostgreSQL and separate components.

``scripts/postgres.sh`` starts a throwaway PostgreSQL on 127.0.0.1; ``airflow db migrate`` creates the
metadata schema there; then ``airflow api-server``, ``scheduler`` (LocalExecutor), ``dag-processor``
and ``triggerer`` run as four processes (each in its own process group), configured by environment
variables only, like the containers of ``docker/compose.yaml``.  DAGs come from the real loader
(``dags/stepcab_dags.py``) over ``example_recipes/``; runs are triggered over REST and with
``airflow dags trigger``.  A hand-written DAG of deferrable Slurm steps (``slurm_demo.yml``) goes through
the triggerer against the project's Slurm cluster.

The REST client, logs and waits come from :mod:`airflow_harness` (``Standalone``); only start/stop differ.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from airflow_harness import (LOADER, VENV_BIN, Standalone, StandaloneError, _group_alive, free_port,
                             have_loader)
from needs import in_ci, missing
from slurm_cluster import slurm_cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.airflow]
REPO = Path(__file__).resolve().parent.parent
PG_SCRIPT = REPO / "scripts" / "postgres.sh"
SLURM_RECIPE = REPO / "example_recipes" / "slurm_demo.yml"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: example DAG -> the state its run must end in (the error recipe fails on purpose)
EXAMPLES = {"text-pipeline": "success", "wranglers": "success", "nested": "success", "loop": "success",
            "python-cabs": "success", "dataflow": "success", "wranglers__wranglers-error": "failed",
            "daily-digest": "success"}

SLURM_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator

# retries: Airflow 3.3.2's scheduler can fail a deferred task whose trigger fires before the executor
# event of the deferring process is processed (apache/airflow#67287, "finished with state success, but
# the task instance's state attribute is queued"); the retry re-attaches to the finished Slurm job.
with DAG("pg_slurm_demo", schedule=None, start_date=pendulum.datetime(2024, 1, 1),
         default_args={{"retries": 2, "retry_delay": pendulum.duration(seconds=2)}}) as dag:
    StepcabSlurmOperator(task_id="report", recipe_file={recipe!r}, recipe_name="slurm_demo",
                         step_path=["report"]) >> \\
        StepcabSlurmOperator(task_id="count", recipe_file={recipe!r}, recipe_name="slurm_demo",
                             step_path=["count"])
"""


def _pg(command: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PG_SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def postgres():
    """A fresh PostgreSQL on a free port; yields its SQLAlchemy URL."""
    have_server = any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or shutil.which("pg_ctl")
    if not have_server and os.geteuid() != 0 and not in_ci():
        pytest.skip("PostgreSQL is not installed (scripts/postgres.sh install needs root)")
    # not under pytest's 0700 tmp: as root the server runs as "postgres", which must reach the directory
    base = Path(tempfile.mkdtemp(prefix="stepcab-pg-", dir="/var/tmp"))
    base.chmod(0o755)
    env = {**os.environ, "STEPCAB_PG_DIR": str(base / "pg"), "STEPCAB_PG_PORT": str(free_port())}
    up = _pg("up", env)
    try:
        assert up.returncode == 0, f"postgres did not start:\n{up.stdout}\n{up.stderr}"
        again = _pg("up", env)  # idempotent
        assert again.returncode == 0, again.stderr
        assert _pg("status", env).stdout.strip() == "running"
        yield _pg("url", env).stdout.strip()
    finally:
        down = _pg("down", env)
        shutil.rmtree(base, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    assert _pg("status", env).returncode == 3


class SplitAirflow(Standalone):
    """Airflow as separate components on PostgreSQL, with the harness's REST helpers."""

    def __init__(self, base: Path, dags_folder: Path, sql_url: str) -> None:
        super().__init__(base, dags_folder, env={
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # what every component of a real deployment shares (docker/compose.yaml sets the same)
            "AIRFLOW__API_AUTH__JWT_SECRET": "stepcab-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__API__SECRET_KEY": "stepcab-test-api-secret",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "",  # filled below: needs the port
            "AIRFLOW__STEPCAB__WORKDIR": str(Path(base) / "work" / "{dag_id}" / "{run_id}"),
            # log servers of the scheduler's workers and of the triggerer (defaults 8793/8794 may be taken)
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        })
        self.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.url}/execution/"
        self.procs: dict[str, subprocess.Popen] = {}

    def log_file(self, component: str) -> Path:
        return self.home / f"{component}.log"

    def start(self, timeout: float = 300) -> "SplitAirflow":
        self.home.mkdir(parents=True, exist_ok=True)
        (self.base / "work").mkdir(exist_ok=True)
        self.cli("db", "migrate", timeout=600)
        try:
            for component in COMPONENTS:
                with open(self.log_file(component), "wb") as log:
                    self.procs[component] = subprocess.Popen(
                        [str(VENV_BIN / "airflow"), component], env=self.env, cwd=self.base, stdout=log,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self._wait_healthy(timeout)
            self.password = self._read_password(timeout=30)
            self._login()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wanted = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    self._fail(f"airflow {name} exited early with {proc.returncode}")
            h = self.health()
            if h and all(h.get(k, {}).get("status") == "healthy" for k in wanted):
                return
            time.sleep(0.5)
        self._fail(f"components not healthy after {timeout:.0f} s (last: {self.health()})")

    def log_tail(self, lines: int = 25) -> str:
        parts = []
        for component in COMPONENTS:
            try:
                text = self.log_file(component).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            parts.append(f"--- {component}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM every component's process group, then SIGKILL what is left."""
        if self._client is not None:
            self._client.close()
            self._client = None
        groups = [p.pid for p in self.procs.values()]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            for pgid in groups:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
                for p in self.procs.values():
                    p.poll()
                time.sleep(0.2)
        for p in self.procs.values():
            p.poll()
        self.left_running = [g for g in groups if _group_alive(g)]
        self.procs = {}


@pytest.fixture(scope="module")
def airflow_pg(postgres, tmp_path_factory):
    if not have_loader():
        missing("no DAG loader / example recipes (dags/, example_recipes/)")
    base = tmp_path_factory.mktemp("pg-airflow")
    dags = base / "dags"
    dags.mkdir()
    shutil.copy2(LOADER, dags / LOADER.name)
    (dags / "pg_slurm_demo.py").write_text(SLURM_DAG.format(recipe=str(SLURM_RECIPE)))
    af = SplitAirflow(base, dags, postgres)
    af.start()
    try:
        yield af
    finally:
        af.stop()
        assert not af.left_running, f"process groups still alive: {af.left_running}"


def _xcom(af: SplitAirflow, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    entry = af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                   params={"deserialize": "true", "stringify": "false"})
    return entry["value"]


def test_examples_run_through_scheduler_on_postgres(airflow_pg, postgres):
    af = airflow_pg
    health = af.health()
    assert health["metadatabase"]["status"] == "healthy"
    for dag_id in EXAMPLES:
        af.wait_dag(dag_id, timeout=180)
    runs = {}
    for dag_id in EXAMPLES:
        if dag_id == "text-pipeline":  # one through the CLI, as a user of the containers would
            af.unpause(dag_id)
            run_id = "cli-trigger-1"
            af.cli("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps({"prefix": "pg"}))
            runs[dag_id] = run_id
        else:
            runs[dag_id] = af.trigger(dag_id)
    for dag_id, run_id in runs.items():
        run = af.wait_dag_run(dag_id, run_id, timeout=420)
        assert run["state"] == EXAMPLES[dag_id], af.failure_report(dag_id, run_id)
    states = af.task_states("text-pipeline", runs["text-pipeline"])
    assert states == {"make-words": "success", "sort-words": "success", "count": "success",
                      "checksum": "success", "shout": "skipped", "report": "success"}, states
    assert _xcom(af, "text-pipeline", runs["text-pipeline"], "count") == {"nlines": 4}
    workdir = af.base / "work" / "text-pipeline"
    assert [p.name for p in workdir.glob("*/pg-sorted.txt")], list(workdir.rglob("*"))
    assert af.task_states("wranglers__wranglers-error", runs["wranglers__wranglers-error"]) == {
        "run-tool": "failed", "after": "upstream_failed"}
    # the runs really are in PostgreSQL
    out = subprocess.run([str(VENV_BIN / "python"), "-c", (
        "import sys, sqlalchemy as sa; e = sa.create_engine(sys.argv[1]);"
        "c = e.connect(); print(c.execute(sa.text('select count(*) from dag_run')).scalar())"), postgres],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= len(EXAMPLES)


def test_deferred_slurm_steps_through_the_triggerer(airflow_pg, slurm_cluster):  # noqa: F811
    af = airflow_pg
    # the connection lives in the metadata database (PostgreSQL), added as an operator would
    conn = json.loads(subprocess.run(["bash", str(REPO / "scripts" / "cluster" / "cluster.sh"), "conn"],
                                     capture_output=True, text=True, check=True).stdout)
    af.cli("connections", "delete", slurm_cluster.conn_id, check=False)
    af.cli("connections", "add", slurm_cluster.conn_id, "--conn-json", json.dumps(conn))
    work = Path(slurm_cluster.work_dir) / f"pg-{os.getpid()}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    work.chmod(0o1777)
    af.wait_dag("pg_slurm_demo", timeout=180)
    run_id = af.trigger("pg_slurm_demo", conf={"stepcab_workdir": str(work), "who": "postgres"})
    try:
        run = af.wait_dag_run("pg_slurm_demo", run_id, timeout=300)
    except StandaloneError:
        raise StandaloneError(af.failure_report("pg_slurm_demo", run_id)) from None
    assert run["state"] == "success", af.failure_report("pg_slurm_demo", run_id)
    assert (work / "report.txt").read_text() == "report for postgres\n"
    job = _xcom(af, "pg_slurm_demo", run_id, "report", "slurm_job")
    assert str(job["job_id"]).isdigit()
    log = af.task_log("pg_slurm_demo", run_id, "count")
    assert "count 3 of 3" in log, log
