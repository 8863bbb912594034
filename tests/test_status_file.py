"""StatusFileSensor / StatusFileTrigger: local files through ``dag.test()`` (the example recipe
end to end) and remote files over SFTP on the real cluster."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401
from test_native_operator import load_dags, run_dag, write_dag_file, xcom

pytestmark = pytest.mark.airflow
RECIPE = Path(__file__).resolve().parent.parent / "example_recipes" / "status_file_demo.yml"

DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.native import StepcabNativeOperator
from airflow_provider_stepcab.sensors.status_file import StatusFileSensor

with DAG("stepcab_status_file", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
    w = "{{{{ dag_run.conf['stepcab_workdir'] }}}}"
    launch = StepcabNativeOperator(task_id="launch", recipe_file={recipe!r}, recipe_name="status_file_demo",
                                   step_path=["launch"])
    wait = StatusFileSensor(task_id="wait", result_path=w + "/result.json", status_path=w + "/status.txt",
                            error_path=w + "/error.txt", poll_interval=0.5, timeout=60)
    launch >> wait
"""


@pytest.fixture(scope="module")
def status_dag(airflow_db, airflow_dags_folder):
    path = write_dag_file(airflow_dags_folder, "stepcab_status_file_dag.py", DAG_FILE.format(recipe=str(RECIPE)))
    return load_dags(path)["stepcab_status_file"]


def test_local_result_pushed_and_progress_logged(status_dag, tmp_path, capfd):
    run, states = run_dag(status_dag, tmp_path / "ok", {"steps": 6})
    cap = capfd.readouterr()
    out = cap.out + cap.err
    assert states == {"launch": "success", "wait": "success"}, states
    assert xcom(run, "wait") == {"answer": 42, "steps": 6}
    seen = [i for i in range(1, 7) if f"status: working: step {i} of 6" in out]
    assert len(seen) >= 3 and seen[-1] == 6, (seen, out[-3000:])      # progress logged as it changed


def test_local_error_marker_fails_with_its_message(status_dag, tmp_path, capfd):
    run, states = run_dag(status_dag, tmp_path / "bad", {"steps": 1, "mode": "fail"})
    cap = capfd.readouterr()
    assert states["wait"] == "failed", states
    assert "worker failed: out of coffee" in cap.out + cap.err


def first_event(trigger):
    async def go():
        async for ev in trigger.run():
            return ev.payload
    return asyncio.run(go())


def test_local_timeout(tmp_path):
    from airflow_provider_stepcab.sensors.status_file import AirflowSensorTimeout, StatusFileSensor
    from airflow_provider_stepcab.triggers.status_file import StatusFileTrigger

    trig = StatusFileTrigger(result_path=str(tmp_path / "never.json"), poll_interval=0.2, timeout=1)
    event = first_event(trig)
    assert event["status"] == "timeout"
    sensor = StatusFileSensor(task_id="s", result_path="x")
    with pytest.raises(AirflowSensorTimeout, match="no complete result"):
        sensor.execute_complete({}, event)


def test_local_text_result_must_stop_growing(tmp_path):
    from airflow_provider_stepcab.triggers.status_file import StatusFileTrigger

    (tmp_path / "out.txt").write_text("partial")
    trig = StatusFileTrigger(result_path=str(tmp_path / "out.txt"), poll_interval=0.3)
    assert first_event(trig)["result"] == "partial"     # complete once two polls agree
    marker = StatusFileTrigger(result_path=str(tmp_path / "out.txt"), done_marker=str(tmp_path / "done"),
                               poll_interval=0.2, timeout=1)
    assert first_event(marker)["status"] == "timeout"   # the marker is required when given


@pytest.mark.slow
def test_sftp_status_and_result(slurm_cluster):  # noqa: F811
    from airflow_provider_stepcab.hooks.slurm import SlurmHook
    from airflow_provider_stepcab.triggers.status_file import StatusFileTrigger

    hook = SlurmHook(slurm_cluster.conn_id)
    d = f"{hook.home()}/status-{os.getpid()}-{time.monotonic_ns()}"
    hook.run(f"mkdir -p {d}; cd {d}; setsid sh -c 'for i in 1 2 3; do echo \"remote $i\" > s.tmp; mv s.tmp status; "
             "sleep 1; done; echo \"{\\\"ok\\\": true}\" > r.tmp; mv r.tmp result.json' </dev/null >/dev/null 2>&1 &")
    hook.close()

    class Rec:
        lines: list = []

        def info(self, msg, *a, **_):
            self.lines.append(msg % a if a else msg)

        warning = debug = info

    trig = StatusFileTrigger(result_path=f"{d}/result.json", status_path=f"{d}/status", error_path=f"{d}/error",
                             ssh_conn_id=slurm_cluster.conn_id, poll_interval=0.3, timeout=60)
    trig._log = Rec()
    event = first_event(trig)
    assert event["status"] == "success", event
    assert event["result"] == {"ok": True}
    assert "status: remote 1" in trig._log.lines and "status: remote 3" in trig._log.lines
