"""The UI plugin's data and pages, in-process: the ``stepcab_step`` record a finished step leaves
(:mod:`airflow_provider_stepcab.ui.records`), the Step and Recipe views built from the metadata
database after a real ``dag.test()`` run of ``example_recipes/loop.yml``, mapped loop instances
named by their value, and escaping of values that come from the run conf.

The HTTP side (auth, routes, a real API server and browser) is ``tests/test_ui_plugin.py``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from airflow_provider_stepcab.ui.records import SOURCES, StepRecordError, step_record
from test_native_operator import load_dags, run_dag, write_dag_file

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "example_recipes"
LOADER = f"""
from airflow_provider_stepcab.dag_factory import build_dags

build_dags(globals(), folders=[{str(EXAMPLES)!r}], on_error="raise")
"""
#: a loop value that is markup: it reaches the page through the run conf and a file name
EVIL = '<img src=x onerror="alert(1)">'


def base_record(**extra):
    return {**dict(fqname="r.s", cab="echo", backend="native", workdir="/tmp/w", argv=("echo", 1)), **extra}


def test_step_record_normalises_the_documented_shape():
    rec = step_record(**base_record(params={"n": (1, 2)}, sources={"n": "run conf"}, outputs=("a.txt",)))
    assert rec["argv"] == ["echo", "1"] and rec["params"] == {"n": [1, 2]} and rec["outputs"] == ["a.txt"]
    assert rec["command"] is None and rec["pod"] is None and rec["script"] is None and rec["image"] is None
    assert set(rec) == {"fqname", "cab", "backend", "image", "workdir", "argv", "command", "script", "pod",
                        "pod_name", "pod_phase", "params", "sources", "outputs", "skip_reason", "cache", "doc"}
    assert "run conf" in SOURCES and "cab default" in SOURCES


@pytest.mark.parametrize("fields, message", [
    (dict(fqname="r.s", cab="echo", backend="native", workdir="/w"), "missing field(s) argv"),
    (base_record(argv="echo hi"), "argv must be a list of strings"),
    (base_record(sources={"n": "guess"}), "sources.n: 'guess' is not one of"),
    (base_record(colour="red"), "unknown field(s) colour"),
    (base_record(pod=["x"]), "pod must be a mapping"),
])
def test_step_record_rejects_a_wrong_shape(fields, message):
    with pytest.raises(StepRecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        step_record(**fields)


def test_step_page_shows_slurm_job_accounting_and_pod_when_published():
    """What a Slurm step (``slurm_job`` + ``stepcab_resources`` XComs) and a pod step publish."""
    from airflow_provider_stepcab.ui.records import RESOURCES_KEY, SLURM_KEY
    from airflow_provider_stepcab.operators.slurm import XCOM_JOB_KEY
    from airflow_provider_stepcab.runtime.accounting import XCOM_KEY
    from airflow_provider_stepcab.ui.render import step_page

    assert (SLURM_KEY, RESOURCES_KEY) == (XCOM_JOB_KEY, XCOM_KEY)  # the keys the operators push
    script = "#!/bin/bash\n#SBATCH --job-name=x\nexec echo 1\n"
    rec = step_record(**base_record(backend="native", script=script, pod={"spec": {"containers": [{}]}},
                                    pod_name="stepcab-r-s-abc", pod_phase="Succeeded"))
    data = {"dag_id": "d", "run_id": "r", "task_id": "s", "map_index": -1, "state": "success", "try_number": 1,
            "name": None, "hostname": None, "start_date": None, "end_date": None, "record": rec,
            "slurm": {"job_id": "42", "job_name": "x", "argv": ["echo", "1"], "script": script},
            "resources": {"job_id": "42", "state": "COMPLETED", "nodelist": "c1", "queue_wait_s": 3},
            "assets": [], "loop_instances": []}
    html = step_page(data, prefix="/stepcab")
    for fact, value in (("pod", "stepcab-r-s-abc"), ("pod phase", "Succeeded")):
        assert f'<tr data-fact="{fact}"><td>{fact}</td><td>{value}</td></tr>' in html
    assert '<tr data-fact="job_id"><td>job_id</td><td>42</td></tr>' in html
    for fact, value in (("state", "COMPLETED"), ("nodelist", "c1"), ("queue_wait_s", "3")):
        assert f'<tr data-fact="{fact}"><td>{fact}</td><td>{value}</td></tr>' in html
    assert html.count("#SBATCH --job-name=x") == 1  # in its own section, not again in the job table
    assert '<pre id="pod">' in html


@pytest.fixture(scope="module")
def loop_run(airflow_db, airflow_dags_folder, tmp_path_factory):
    """A finished run of ``loop``: names from the conf, ``gather.out`` overridden per step."""
    dags = load_dags(write_dag_file(airflow_dags_folder, "stepcab_ui_examples.py", LOADER))
    work = tmp_path_factory.mktemp("ui-loop")
    conf = {"names": ["alpha", EVIL], "steps": {"gather": {"params": {"out": "merged.txt"}}}}
    run, states = run_dag(dags["loop"], work, conf)
    assert run.state == "success", states
    return run, work


def _step(run, task_id, map_index=-1):
    from airflow.utils.session import create_session

    from airflow_provider_stepcab.ui.data import step_data

    with create_session() as session:
        return step_data(session, run.dag_id, run.run_id, task_id, map_index)


def test_a_finished_step_publishes_what_it_ran(loop_run):
    run, work = loop_run
    found = _step(run, "gather")
    rec = found["record"]
    assert rec["fqname"] == "loop.gather" and rec["cab"] == "cat-files" and rec["backend"] == "native"
    assert rec["workdir"] == str(work) and rec["command"] is None
    # the argv names the run-conf output and the globbed parts, as the step ran it
    assert rec["argv"][-1] == "merged.txt" or "merged.txt" in rec["argv"], rec["argv"]
    assert (work / "merged.txt").is_file()
    assert rec["params"]["out"] == "merged.txt" and rec["sources"]["out"] == "run conf"
    assert rec["sources"]["files"] == "formula"
    assert rec["outputs"] == [str(work / "merged.txt")]
    assert "cab 'cat-files'" in rec["doc"] and "inputs:" in rec["doc"]
    assert [a["uri"] for a in found["assets"]] == [f"file://{work / 'merged.txt'}"]
    count = _step(run, "count")["record"]
    assert count["sources"]["file"] == "formula" and count["params"]["file"] == "merged.txt"


def test_mapped_loop_instances_are_named_by_their_value(loop_run):
    run, _ = loop_run
    found = _step(run, "fan-out.write", 1)
    assert found["name"] == f"name={EVIL}"
    assert [(i["map_index"], i["name"]) for i in found["loop_instances"]] == [(0, "name=alpha"),
                                                                            (1, f"name={EVIL}")]
    assert found["record"]["params"]["out"] == f"part-{EVIL}.txt"


def test_step_page_escapes_values_from_the_run_conf(loop_run):
    from airflow_provider_stepcab.ui.render import step_page

    run, _ = loop_run
    found = _step(run, "fan-out.write", 1)
    html = step_page(found, prefix="/stepcab")
    assert EVIL not in html and "<img" not in html
    assert "name=&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    # the copyable command line is the argv the task ran, shell-quoted
    shown = html.split('<pre id="argv">', 1)[1].split("</pre>", 1)[0]
    from html import unescape

    assert shlex.split(unescape(shown)) == found["record"]["argv"]
    assert 'href="/stepcab/step/loop/' in html and "/fan-out.write/0" in html


def test_recipe_view_lists_steps_loop_and_blocks(loop_run):
    from airflow.utils.session import create_session

    from airflow_provider_stepcab.ui.data import recipe_data
    from airflow_provider_stepcab.ui.render import recipe_page

    assert loop_run[0].state == "success"  # the run put the DAG and its serialisation into the database
    with create_session() as session:
        found = recipe_data(session, "loop")
    assert [s["path"] for s in found["steps"]] == ["fan-out", "fan-out.write", "fan-out.hash", "gather", "count"]
    by_path = {s["path"]: s for s in found["steps"]}
    assert by_path["fan-out"]["loop"]["var"] == "name" and by_path["fan-out"]["loop"]["over"] == "names"
    assert by_path["fan-out.write"]["cab"] == "write-lines"
    assert by_path["fan-out.write"]["class"] == "StepcabNativeOperator"
    assert by_path["fan-out.write"]["loop"]["values_task"] == "fan-out__for_loop"
    assert found["file"] == str(EXAMPLES / "loop.yml")
    assert any(f.endswith("lib/common_cabs.yml") for f in found["files"]), found["files"]
    # the loaded recipe keeps each block's file and line (includes resolved)
    rows = {text: (file, line) for _, text, file, line in found["lines"]}
    assert rows["cab: cat-files"] == (str(EXAMPLES / "loop.yml"), 42)
    assert "per-name" in found["sub_recipes"]
    html = recipe_page(found)
    assert 'data-step="fan-out.hash"' in html and "for name in names (scatter -1)" in html
