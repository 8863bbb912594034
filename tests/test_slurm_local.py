"""Slurm from the login node without SSH (``ssh_conn_id: local``), accounting, retries with more
resources and ``stepcab report`` — real Airflow (``dag.test()`` here, where this machine is the
cluster's login node, like a LocalExecutor or Edge worker there) against the real test cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from needs import missing

from slurm_cluster import slurm_cluster  # noqa: F401
from test_native_operator import chain_dag_text, load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
RECIPE = Path(__file__).resolve().parent / "data" / "recipes" / "slurm_local.yml"

DAG_FILE = chain_dag_text("stepcab_slurm_local", "slurm.StepcabSlurmOperator", RECIPE, "slurm_local",
                          ["count", "burn"])


def sacct(*args: str) -> str:
    return subprocess.run(["sacct", "--noheader", "--parsable2", *args], capture_output=True, text=True,
                          check=True).stdout


def jobs_named(*names: str) -> list:
    out = sacct("--allocations", f"--name={','.join(names)}", "--starttime=now-1hour", "--format=JobIDRaw")
    return out.split()


@pytest.fixture(scope="module")
def local_dag(slurm_cluster, airflow_db, airflow_dags_folder):  # noqa: F811
    path = write_dag_file(airflow_dags_folder, "stepcab_slurm_local_dag.py", DAG_FILE)
    return load_dags(path)["stepcab_slurm_local"]


def shared_workdir(cluster, name: str) -> Path:
    path = Path(cluster.work_dir) / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    path.chmod(0o1777)
    return path


@pytest.fixture(scope="module")
def finished_run(local_dag, slurm_cluster, tmp_path_factory):  # noqa: F811
    """One dag.test() run of count >> burn; its console output (the task logs) kept in ``out``."""
    work = shared_workdir(slurm_cluster, "local")
    logs = tmp_path_factory.mktemp("logs") / "out.txt"
    with open(logs, "w+") as fh:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(fh.fileno(), 1)
        try:
            with contextlib.redirect_stdout(fh):
                run, states = run_dag(local_dag, work)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    return SimpleNamespace(run=run, states=states, work=work, out=logs.read_text())


def test_local_submission_end_to_end(finished_run, capfd):
    assert finished_run.states == {"count": "success", "burn": "success"}, finished_run.states
    job = xcom(finished_run.run, "count", "slurm_job")
    assert job["ssh_conn_id"] == "local" and job["reattached"] is False
    assert jobs_named(job["job_name"]) == [job["job_id"]]
    # the wrapper's books are on this machine, in the local user's home (no SFTP involved)
    assert Path(job["job_dir"]).is_relative_to(Path.home())
    assert (Path(job["job_dir"]) / "exitcode").read_text().strip() == "0"
    # the Step view's record: the argv and the very sbatch script submitted (kept across the deferral)
    from airflow_provider_stepcab.plan.sbatch import SCRIPT

    rec = xcom(finished_run.run, "count", "stepcab_step")
    assert rec["argv"] == job["argv"] and rec["argv"]
    assert rec["script"] == (Path(job["job_dir"]) / SCRIPT).read_text() and "#SBATCH" in rec["script"]
    # the job's output streamed into the task log while it ran, from the local files
    assert re.search(r"count 1 of 3.*\n(.*\n)*.*count 3 of 3", finished_run.out)


def _seconds(text: str) -> float:
    """sacct's [DD-][HH:]MM:SS[.mmm], parsed here independently of the code under test."""
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    return (int(days) if days else 0) * 86400 + sum(v * 60 ** i for i, v in enumerate(reversed(parts)))


KIB = {"K": 1, "M": 1024, "G": 1024 * 1024}


def test_accounting_matches_sacct_and_ends_the_log(finished_run):
    import datetime as dt

    for task in ("count", "burn"):
        job = xcom(finished_run.run, task, "slurm_job")
        rec = xcom(finished_run.run, task, "stepcab_resources")
        fmt = "JobIDRaw,Elapsed,ElapsedRaw,TotalCPU,MaxRSS,ReqMem,AllocCPUS,State,ExitCode,NodeList,Submit,Start"
        rows = [line.split("|") for line in sacct(f"--jobs={job['job_id']}", f"--format={fmt}").splitlines()]
        top = next(r for r in rows if r[0] == job["job_id"])
        _, elapsed, elapsed_raw, total_cpu, _, req_mem, alloc, state, exit_code, nodes, submit, start = top
        rss_k = max(float(r[4][:-1]) * KIB[r[4][-1]] for r in rows if r[4])
        assert (rec["job_id"], rec["elapsed"], rec["total_cpu"], rec["req_mem"]) == (job["job_id"], elapsed,
                                                                                    total_cpu, req_mem)
        assert (rec["alloc_cpus"], rec["state"], rec["exit_code"], rec["nodelist"]) == (int(alloc), state,
                                                                                        exit_code, nodes)
        assert rec["max_rss_bytes"] == rss_k * 1024
        assert rec["queue_wait_s"] == (dt.datetime.fromisoformat(start) - dt.datetime.fromisoformat(submit)).seconds
        # seff: CPU time over AllocCPUS x Elapsed; the largest step RSS over the request
        assert rec["cpu_efficiency"] == round(100 * _seconds(total_cpu) / (int(alloc) * int(elapsed_raw)), 2)
        assert rec["memory_efficiency"] == round(100 * rss_k / (float(req_mem[:-1]) * KIB[req_mem[-1]]), 2)
        assert rec["attempt"] == 1 and rec["escalated"] == {}
    # the burning step used its CPU more than the sleeping one
    assert xcom(finished_run.run, "burn", "stepcab_resources")["cpu_efficiency"] > \
        xcom(finished_run.run, "count", "stepcab_resources")["cpu_efficiency"]
    # the figures are the task log's last lines (after the job's own output)
    job = xcom(finished_run.run, "burn", "slurm_job")
    burn_log = finished_run.out[finished_run.out.index("burnt"):]
    assert f"resources (sacct, job {job['job_id']})" in burn_log
    assert re.search(r"CPU efficiency: [0-9.]+% of 00:00:0\d core-walltime", burn_log)
    assert re.search(r"Memory efficiency: [0-9.]+% of 100M", burn_log)


# --------------------------------------------------------------------------- the operator driven directly

def _ctx(try_number, work, run_id=None, select=None):
    """A minimal task context for calling the operator directly (a retry = the same run id)."""
    pushed = {}
    ti = SimpleNamespace(dag_id="stepcab_local_direct", run_id=run_id or f"manual__{os.getpid()}_{time.time_ns()}",
                         task_id="t", try_number=try_number, map_index=-1,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value),
                         xcom_pull=lambda *a, **k: None)
    conf = {"stepcab_workdir": str(work), **({"select": [select]} if select else {})}
    return {"ti": ti, "dag_run": SimpleNamespace(conf=conf), "params": {}, "pushed": pushed}


def _op(step):
    from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator

    return StepcabSlurmOperator(task_id="t", recipe_file=str(RECIPE), recipe_name="slurm_local", step_path=[step])


def _squeue_state(name):
    out = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i|%T"], capture_output=True,
                         text=True).stdout.split()
    return out[0].split("|") if out else None


def _wait_for(pred, timeout=60, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _name(ctx):
    from airflow_provider_stepcab.plan.sbatch import job_name

    ti = ctx["ti"]
    return job_name(ti.dag_id, ti.run_id, ti.task_id, -1, ti.try_number)


def test_kill_cancels_the_local_job(slurm_cluster):  # noqa: F811
    work = shared_workdir(slurm_cluster, "kill")
    ctx, op, outcome = _ctx(1, work, select="wait"), _op("wait"), {}

    def worker():
        try:
            outcome["value"] = op.execute(ctx)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    job_id, _ = _wait_for(lambda: (s := _squeue_state(_name(ctx))) and s[1] == "RUNNING" and s, what="RUNNING")
    op.on_kill()                       # what Airflow calls when a user kills the task (SIGTERM to it)
    thread.join(90)
    assert not thread.is_alive()
    assert "CANCELLED" in str(outcome.get("error")), outcome
    assert _wait_for(lambda: sacct("-X", f"--jobs={job_id}", "--format=State").split()[0].startswith("CANCELLED"))


def test_retry_after_the_worker_died_reattaches_without_a_second_job(slurm_cluster):  # noqa: F811
    work = shared_workdir(slurm_cluster, "reattach")
    ctx1 = _ctx(1, work, select="wait")
    child = os.fork()
    if child == 0:  # the first worker: submits, waits ... and is killed
        try:
            _op("wait").execute(ctx1)
        finally:
            os._exit(0)
    job_id, _ = _wait_for(lambda: _squeue_state(_name(ctx1)), what="try 1's job")
    os.kill(child, 9)
    os.waitpid(child, 0)
    ctx2 = _ctx(2, work, run_id=ctx1["ti"].run_id, select="wait")
    op2, outcome = _op("wait"), {}
    thread = threading.Thread(target=lambda: outcome.setdefault("value", op2.execute(ctx2)), daemon=True)
    thread.start()
    _wait_for(lambda: "slurm_job" in ctx2["pushed"], what="try 2's job record")
    (work / "release").touch()
    thread.join(90)
    assert not thread.is_alive()
    job2 = ctx2["pushed"]["slurm_job"]
    assert job2["reattached"] is True and job2["job_id"] == job_id and job2["try_number"] == 1
    assert jobs_named(_name(ctx1), _name(ctx2)) == [job_id]        # one job in sacct for both tries
    assert ctx2["pushed"]["stepcab_resources"]["state"] == "COMPLETED"


def _retry(slurm_cluster, step):  # noqa: F811
    """Try 1 of ``step`` fails; try 2 (same run) runs again; → (the error, try 2's pushed XComs)."""
    from airflow.sdk.exceptions import AirflowException

    work = shared_workdir(slurm_cluster, step)
    ctx1 = _ctx(1, work, select=step)
    with pytest.raises(AirflowException) as failed:
        _op(step).execute(ctx1)
    ctx2 = _ctx(2, work, run_id=ctx1["ti"].run_id, select=step)
    _op(step).execute(ctx2)
    return str(failed.value), ctx1["pushed"], ctx2["pushed"]


def _job_field(job_id, field):
    return sacct("-X", f"--jobs={job_id}", f"--format={field}").split()[0]


def test_timeout_is_retried_with_more_time(slurm_cluster, capfd):  # noqa: F811
    error, first, second = _retry(slurm_cluster, "overtime")
    assert "TIMEOUT" in error
    assert first["stepcab_resources"]["state"] == "TIMEOUT"
    job2 = second["slurm_job"]
    assert job2["escalated"]["time"]["from"] == "00:01:00" and job2["escalated"]["time"]["to"] == "00:02:00"
    assert _job_field(first["slurm_job"]["job_id"], "Timelimit") == "00:01:00"
    assert _job_field(job2["job_id"], "Timelimit") == "00:02:00"
    rec = second["stepcab_resources"]
    assert rec["state"] == "COMPLETED" and rec["attempt"] == 2 and rec["escalated"]["time"]["to"] == "00:02:00"
    out = capfd.readouterr().out
    assert "retry with more resources: time 00:01:00 -> 00:02:00 (1 earlier TIMEOUT try" in out
    assert "Raised for this try: time 00:01:00 -> 00:02:00" in out


def memory_enforced() -> bool:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return bool(re.search(r"^TaskPlugin\s*=.*task/cgroup", out, re.M))


def test_out_of_memory_is_retried_with_doubled_memory(slurm_cluster, capfd):  # noqa: F811
    if not memory_enforced():
        msg = ("the running test cluster does not enforce memory (TaskPlugin without task/cgroup): "
               "restart it with scripts/cluster/cluster.sh down && up")
        missing(msg)
    error, first, second = _retry(slurm_cluster, "hog")
    assert "OUT_OF_MEMORY" in error
    assert first["stepcab_resources"]["state"] == "OUT_OF_MEMORY"
    assert second["slurm_job"]["escalated"]["mem"] == {
        "from": "64M", "to": "128M", "why": "1 earlier OUT_OF_MEMORY/OOMKilled try; rule factor 2, max 1G"}
    assert _job_field(second["slurm_job"]["job_id"], "ReqMem") == "128M"
    assert second["stepcab_resources"]["state"] == "COMPLETED"
    assert "allocated 90 MiB" in capfd.readouterr().out


def test_report_draws_the_run_with_its_efficiencies(finished_run, tmp_path):
    from airflow_provider_stepcab.cli import main

    out = tmp_path / "report.html"
    run = finished_run.run
    assert main(["report", run.dag_id, run.run_id, "-o", str(out)]) == 0
    page = out.read_text()
    svg = page[page.index("<svg"):page.index("</svg>")]
    bars = re.findall(r'<rect class="run" data-state="(\w+)" x="([0-9.]+)" y="(\d+)" width="([0-9.]+)"', svg)
    assert [b[0] for b in bars] == ["COMPLETED", "COMPLETED"]
    assert float(bars[1][1]) > float(bars[0][1])        # burn ran after count: further right, lower row
    assert int(bars[1][2]) > int(bars[0][2])
    for task in ("count", "burn"):
        rec = xcom(run, task, "stepcab_resources")
        row = re.search(rf"<tr><td>{task}</td>(.*?)</tr>", page).group(1)
        assert f"<td>{rec['job_id']}</td>" in row and f"<td>{rec['cpu_efficiency']:.1f}%</td>" in row
        assert f"<td>{rec['memory_efficiency']:.1f}%</td>" in row
    # a missing run is a clear error, not a traceback
    assert main(["report", run.dag_id, "no-such-run", "-o", str(tmp_path / "x.html")]) == 1
