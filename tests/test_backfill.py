"""``airflow backfill create`` over a scheduled DAG: the standalone scheduler runs every date."""

from __future__ import annotations

import time

import pytest

from airflow_harness import Standalone, StandaloneError, have_loader

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def backfill(sa: Standalone, dag_id: str, from_date: str, to_date: str, *, expect: int,
             timeout: float = 300) -> list[dict]:
    """Create a backfill with the CLI, unpause the DAG and wait until its *expect* runs finish.

    The scheduler leaves the runs of a paused DAG's backfill queued, hence the unpause; it comes
    after the create so that the scheduler's own writes (a run for the latest interval) do not race
    it.  SQLite can still answer "database is locked" at once when a read transaction must turn into
    a write (the busy timeout does not apply then): the create is retried while no backfill exists.
    """
    sa.wait_dag(dag_id)
    for attempt in range(4):
        out = sa.cli("backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date,
                     check=False)
        if out.returncode == 0:
            break
        created = sa.api("GET", "/backfills", params={"dag_id": dag_id})["backfills"]
        if "database is locked" not in out.stdout + out.stderr or created or attempt == 3:
            raise StandaloneError(f"airflow backfill create -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        time.sleep(2)
    sa.unpause(dag_id)
    deadline = time.monotonic() + timeout
    while True:
        runs = sa.api("GET", f"/dags/{dag_id}/dagRuns",
                      params={"run_type": "backfill", "limit": 100, "order_by": "logical_date"})["dag_runs"]
        if len(runs) >= expect and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise StandaloneError(
                f"backfill of {dag_id} not finished after {timeout:.0f} s: "
                f"{[(r['dag_run_id'], r['state']) for r in runs]}\nCLI said:\n{out.stdout}\n{out.stderr}")
        time.sleep(2)


def test_backfill_of_harness_daily_dag(standalone):
    runs = backfill(standalone, "harness_daily", "2024-01-01", "2024-01-03", expect=3)
    days = [r["logical_date"][:10] for r in runs]
    assert days == ["2024-01-01", "2024-01-02", "2024-01-03"], runs
    for r in runs:
        assert r["state"] == "success", standalone.failure_report("harness_daily", r["dag_run_id"])
    log = standalone.task_log("harness_daily", runs[1]["dag_run_id"], "stamp")
    assert "DS=2024-01-02" in log.splitlines(), log


@pytest.mark.skipif(not have_loader(), reason="dags/stepcab_dags.py or example_recipes/ not there yet")
def test_backfill_of_scheduled_recipe(standalone):
    """example_recipes/daily-digest.yml (``opts.airflow.schedule: '@daily'``) backfills; each run
    works on its own logical date (``{config.run.ds}`` in file names and the report)."""
    dag_id = "daily-digest"
    details = standalone.wait_dag(dag_id)
    assert "stepcab" in [t["name"] if isinstance(t, dict) else t for t in details["tags"]], details["tags"]
    runs = backfill(standalone, dag_id, "2024-02-01", "2024-02-02", expect=2)
    assert [r["logical_date"][:10] for r in runs] == ["2024-02-01", "2024-02-02"], runs
    for r in runs:
        assert r["state"] == "success", standalone.failure_report(dag_id, r["dag_run_id"])
    for r in runs:
        day = r["logical_date"][:10]
        log = standalone.task_log(dag_id, r["dag_run_id"], "report")
        assert f"digest for {day}: 3 distinct items" in log, log
        # the run directory ([stepcab] workdir) is shared by these runs: the date keeps them apart
        assert (standalone.base / "work" / f"digest-{day}-sorted.txt").read_text() == "alerts\nlogs\nmetrics\n"
        assert standalone.task_states(dag_id, r["dag_run_id"]) == {
            "collect": "success", "dedup": "success", "count": "success", "report": "success"}
