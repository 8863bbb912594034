"""Every runnable recipe in ``example_recipes/`` through real Airflow ``dag.test()``.

The DAGs come from the real loader (``build_dags`` over ``example_recipes/``) placed in the
session's dags folder; all runs share one process (the first ``dag.test`` pays the start-up).
Each run gets its own working directory through the ``stepcab_workdir`` conf key.
``stepcab run`` (``run_cli``) is exercised as a subprocess, as a user would run it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_native_operator import asset_event_uris, load_dags, run_dag, write_dag_file, xcom

pytestmark = pytest.mark.airflow
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "example_recipes"
VENV = REPO / ".venv"

LOADER = f"""
from airflow_provider_stepcab.dag_factory import build_dags

build_dags(globals(), folders=[{str(EXAMPLES)!r}], on_error="raise")
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def examples(airflow_db, airflow_dags_folder):
    return load_dags(write_dag_file(airflow_dags_folder, "stepcab_examples.py", LOADER))


def test_every_example_becomes_a_dag(examples):
    assert {"text-pipeline", "wranglers", "wranglers__wranglers-error", "wranglers__wranglers-exit-code",
            "nested", "loop", "python-cabs", "dataflow", "radio-imaging", "daily-digest"} <= set(examples)
    radio = examples["radio-imaging"]  # validates and plans, cannot run here (container images)
    assert [t.task_id for t in radio.tasks] == ["flag-autocorr", "image-1", "mask", "image-2"]


def test_text_pipeline_skip_and_data_passing(examples, tmp_path):
    run, states = run_dag(examples["text-pipeline"], tmp_path)
    assert states == {"make-words": "success", "sort-words": "success", "count": "success",
                      "checksum": "success", "shout": "skipped", "report": "success"}, states
    assert run.state == "success"
    digest = sha("apple\nfig\nkiwi\npear\n")
    assert (tmp_path / "demo-sorted.txt").read_text() == "apple\nfig\nkiwi\npear\n"
    assert xcom(run, "count") == {"nlines": 4}
    assert xcom(run, "report", "stepcab_params") == {"text": f"demo: 4 unique words, sha256 {digest}"}
    uris = asset_event_uris(run)
    assert {f"file://{tmp_path}/demo-words.txt", f"file://{tmp_path}/demo-sorted.txt"} <= uris


def test_text_pipeline_params_from_conf(examples, tmp_path):
    conf = {"words": ["b", "a", "b"], "prefix": "x", "shout": True}
    run, states = run_dag(examples["text-pipeline"], tmp_path, conf)
    assert set(states.values()) == {"success"}, states
    assert xcom(run, "count") == {"nlines": 2}
    assert (tmp_path / "x-sorted.txt").read_text() == "a\nb\n"


def test_step_param_and_backend_overrides_from_conf(examples, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__STEPCAB__TRIGGER_OVERRIDES_ALLOW", "backend.native.virtual_env")
    conf = {"steps": {"report": {"params": {"text": "custom {recipe.prefix}"}},
                      "*": {"backend": {"select": "native"}},
                      "count": {"backend": {"native": {"virtual_env": str(VENV)}}}}}
    run, states = run_dag(examples["text-pipeline"], tmp_path / "a", conf)
    assert run.state == "success", states
    # a conf value is data: never substituted again (docs/security.md)
    assert xcom(run, "report", "stepcab_params") == {"text": "custom {recipe.prefix}"}
    assert xcom(run, "count") == {"nlines": 4}
    conf = {"steps": {"checksum": {"backend": {"select": "singularity"}}}}  # not available to native tasks
    run, states = run_dag(examples["text-pipeline"], tmp_path / "b", conf)
    assert states["count"] == "success" and states["checksum"] == "failed", states
    assert states["report"] == "upstream_failed" and run.state == "failed"


def test_step_selection(examples, tmp_path):
    run, states = run_dag(examples["text-pipeline"], tmp_path, {"select": ["make-words", "sort-words"]})
    assert states == {"make-words": "success", "sort-words": "success", "count": "skipped",
                      "checksum": "skipped", "shout": "skipped", "report": "skipped"}, states


def test_wranglers_parse_and_declare_success(examples, tmp_path):
    run, states = run_dag(examples["wranglers"], tmp_path)
    assert states == {"run-tool": "success", "grumpy": "success", "use-result": "success"}, states
    assert xcom(run, "run-tool") == {"answer": 42, "ratio": 0.25}
    assert xcom(run, "use-result", "stepcab_params") == {"text": "the answer is 42, ratio 0.25"}


def test_error_wrangler_fails_the_step(examples, tmp_path):
    run, states = run_dag(examples["wranglers__wranglers-error"], tmp_path)
    assert states == {"run-tool": "failed", "after": "upstream_failed"}, states
    assert run.state == "failed"


def test_exit_code(examples, tmp_path):
    dag = examples["wranglers__wranglers-exit-code"]
    run, states = run_dag(dag, tmp_path / "ok")
    assert states == {"exit": "success", "after": "success"}
    assert xcom(run, "after", "stepcab_params") == {"text": "previous step exited with 0"}
    run, states = run_dag(dag, tmp_path / "bad", {"code": 3})
    assert states == {"exit": "failed", "after": "upstream_failed"}, states


def test_nested_recipes_are_task_groups(examples, tmp_path):
    dag = examples["nested"]
    assert "fp-fruit" in dag.task_group.children and "fp-fruit.hash" in dag.task_dict
    run, states = run_dag(dag, tmp_path)
    assert run.state == "success" and set(states.values()) == {"success"}, states
    fruit, veg = sha("fig\npear\nplum\n"), sha("kale\nleek\n")
    assert xcom(run, "fp-fruit.hash") == {"digest": fruit}
    assert xcom(run, "report", "stepcab_params") == {
        "text": f"fruit: 3 kinds ({fruit}); veg: 2 kinds ({veg})"}


def test_for_loop_scatter_is_mapped(examples, tmp_path):
    run, states = run_dag(examples["loop"], tmp_path)
    assert run.state == "success", states
    for name in ("fan-out.write", "fan-out.hash"):
        assert [states[f"{name}[{i}]"] for i in range(3)] == ["success"] * 3, states
    assert xcom(run, "fan-out.hash", map_index=1) == {"digest": sha("beta\niteration 1\n")}
    assert (tmp_path / "all-parts.txt").read_text() == "".join(
        f"{n}\niteration {i}\n" for i, n in enumerate(["alpha", "beta", "gamma"]))
    assert xcom(run, "count") == {"nlines": 6}
    run, states = run_dag(examples["loop"], tmp_path / "two", {"names": ["x", "y"]})
    assert run.state == "success" and "fan-out.write[1]" in states and "fan-out.write[2]" not in states


def test_python_flavours(examples, tmp_path):
    run, states = run_dag(examples["python-cabs"], tmp_path)
    assert run.state == "success", states
    assert xcom(run, "stats") == {"count": 4, "longest": "elephantine"}
    assert xcom(run, "double") == {"result": 8.0}
    assert xcom(run, "summary") == {"total": 32.0, "label": "elephantine:32.0"}
    assert xcom(run, "report", "stepcab_params") == {"text": "elephantine:32.0 (total 32.0)"}


def test_dataflow_parallel_branches(examples, tmp_path):
    dag = examples["dataflow"]
    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert up["write-left"] == set() and up["write-right"] == set()
    assert up["join"] == {"sort-left", "sort-right"} and up["sort-right"] == {"write-right"}
    run, states = run_dag(dag, tmp_path)
    assert run.state == "success", states
    assert xcom(run, "count") == {"nlines": 5}


def test_scheduled_daily_digest_works_on_its_logical_date(examples, tmp_path):
    import datetime as dt

    dag = examples["daily-digest"]
    assert dag.schedule == "@daily" and dag.catchup is False
    assert dag.start_date == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    day = dt.datetime(2024, 3, 5, tzinfo=dt.timezone.utc)
    run, states = run_dag(dag, tmp_path, logical_date=day)
    assert run.state == "success" and set(states.values()) == {"success"}, states
    assert (tmp_path / "digest-2024-03-05.txt").read_text() == "logs\nmetrics\nalerts\nlogs\n"
    assert (tmp_path / "digest-2024-03-05-sorted.txt").read_text() == "alerts\nlogs\nmetrics\n"
    assert xcom(run, "count") == {"nlines": 3}
    assert xcom(run, "report", "stepcab_params") == {"text": "digest for 2024-03-05: 3 distinct items"}


def test_dag_run_values_fall_back_to_run_after():
    import datetime as dt
    from types import SimpleNamespace

    from airflow_provider_stepcab.operators.resolve import config_namespace, dag_run_values

    day = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    want = {"logical_date": "2024-01-02T03:04:00+00:00", "ds": "2024-01-02", "ds_nodash": "20240102"}
    assert dag_run_values(SimpleNamespace(logical_date=day, run_after=None)) == want
    assert dag_run_values(SimpleNamespace(logical_date=None, run_after=day)) == want  # manual, no logical date
    assert dag_run_values(None) == {}
    run = config_namespace({"run": {"x": 1}}, want)["run"]
    assert run["ds"] == "2024-01-02" and run["x"] == 1 and "ncpu" in run


# ------------------------------------------------------------------------------- stepcab run

def _stepcab_run(cwd: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["STEPCAB_AIRFLOW_HOME"] = str(cwd / ".home")
    return subprocess.Popen([sys.executable, "-m", "airflow_provider_stepcab.run_cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_stepcab_run_cli(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    ok = _stepcab_run(tmp_path / "ok", str(EXAMPLES / "text-pipeline.yml"), "-p", "words=[beta, alpha]", "-p", "shout=true")
    bad = _stepcab_run(tmp_path / "bad", str(EXAMPLES / "wranglers.yml"), "--recipe", "wranglers-exit-code",
                       "-p", "code=3", "--backend", "native")
    out_ok, _ = ok.communicate(timeout=600)
    out_bad, _ = bad.communicate(timeout=600)
    assert ok.returncode == 0, out_ok[-3000:]
    assert (tmp_path / "ok" / "demo-sorted.txt").read_text() == "alpha\nbeta\n"  # cwd is the workdir
    assert "demo: 2 unique words" in out_ok and "ALPHA" in out_ok and "BETA" in out_ok  # task logs streamed
    assert "shout" in out_ok and "success" in out_ok
    assert bad.returncode == 1, out_bad[-3000:]
    assert "exiting with status 3" in out_bad and "returns error code 3" in out_bad
    assert "upstream_failed" in out_bad


def test_stepcab_run_usage_errors(tmp_path):
    p = _stepcab_run(tmp_path, str(EXAMPLES / "text-pipeline.yml"), "-p", "novalue")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2 and "expected NAME=VALUE" in out
    p = _stepcab_run(tmp_path, str(tmp_path / "missing.yml"))
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2 and "no such file" in out
