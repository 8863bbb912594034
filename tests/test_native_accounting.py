"""A native step's own accounting: its process group's ``rusage`` as the ``stepcab_resources`` XCom
and the task log's last lines, and its row in ``stepcab report`` — through real Airflow (``dag.test()``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_native_operator import chain_dag_text, load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow]
RECIPE = Path(__file__).resolve().parent / "data" / "recipes" / "native_accounting.yml"

DAG_FILE = chain_dag_text("stepcab_native_accounting", "native.StepcabNativeOperator", RECIPE,
                          "native_accounting", ["hog", "nap"])

MIB = 1 << 20


def test_native_steps_are_accounted_and_reported(airflow_db, airflow_dags_folder, tmp_path, capfd):
    from airflow_provider_stepcab.cli import main

    path = write_dag_file(airflow_dags_folder, "stepcab_native_accounting_dag.py", DAG_FILE)
    run, states = run_dag(load_dags(path)["stepcab_native_accounting"], tmp_path / "work")
    out = capfd.readouterr().out
    assert states == {"hog": "success", "nap": "success"}, states
    hog, nap = xcom(run, "hog", "stepcab_resources"), xcom(run, "nap", "stepcab_resources")
    assert hog["source"] == "rusage" and hog["state"] == "COMPLETED" and hog["exit_code"] == "0"
    assert 200 * MIB < hog["max_rss_bytes"] < 400 * MIB          # the 200 MiB it held (+ the interpreter)
    assert 1.0 <= hog["total_cpu_s"] <= hog["elapsed_s"] + 0.1   # the 1 s it burnt, within its wall time
    assert nap["elapsed_s"] >= 1.5 and nap["total_cpu_s"] < 1.0  # the sleeper: wall time, little CPU
    assert nap["max_rss_bytes"] < 100 * MIB
    assert hog["attempt"] == 1 and hog["escalated"] == {}
    # the record ends the step's part of the task log, after the command's own output
    tail = out[out.index("held 200 MiB"):]
    assert "resources (rusage):" in tail and re.search(r"Memory utilized \(MaxRSS\): 2\d\dM", tail)
    # stepcab report: both native steps in the timeline and the table
    page_path = tmp_path / "report.html"
    assert main(["report", run.dag_id, run.run_id, "-o", str(page_path)]) == 0
    page = page_path.read_text()
    assert re.findall(r'<rect class="run" data-state="(\w+)"', page) == ["COMPLETED", "COMPLETED"]
    row = re.search(r"<tr><td>hog</td>(.*?)</tr>", page).group(1)
    assert f"<td>{hog['total_cpu']}</td>" in row and "<td>rusage</td>" not in row
    assert re.search(r"<td>2\d\dM</td>", row)
