"""StepcabNativeOperator through real Airflow (``dag.test()``), on hand-written DAGs.

Also holds the small ``dag.test`` helpers that ``test_examples_run.py`` and ``test_on_kill.py`` import.
"""

from __future__ import annotations

import copy
import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_stepcab.operators.overrides import parse_overrides
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.recipe.errors import RecipeError
from airflow_provider_stepcab.runtime.workdir import choose_workdir, safe_component

pytestmark = pytest.mark.airflow
VENV = Path(__file__).resolve().parent.parent / ".venv"


# ------------------------------------------------------------------------------------------ helpers

def write_dag_file(folder: Path, name: str, text: str) -> Path:
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text))
    return path


def chain_dag_text(dag_id: str, operator: str, recipe: Path, recipe_name: str, steps: list) -> str:
    """A DAG file running ``steps`` of ``recipe_name`` one after another with ``operator`` (a class
    of ``airflow_provider_stepcab.operators``, as ``"slurm.StepcabSlurmOperator"``)."""
    module, _, cls = operator.rpartition(".")
    lines = ["import pendulum", "from airflow.sdk import DAG",
             f"from airflow_provider_stepcab.operators.{module} import {cls}", "",
             f"with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:",
             "    tasks = [" + ", ".join(f"{cls}(task_id={s!r}, recipe_file={str(recipe)!r}, "
                                         f"recipe_name={recipe_name!r}, step_path=[{s!r}])" for s in steps) + "]",
             "    for a, b in zip(tasks, tasks[1:]):", "        a >> b", ""]
    return "\n".join(lines)


def load_dags(path: Path) -> dict:
    """DAGs of one file in the configured dags folder (dag.test needs them to come from there)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(path))
    assert not bag.import_errors, bag.import_errors
    return dict(bag.dags)


def run_dag(dag: Any, workdir: Path, conf: dict | None = None, **test_kwargs: Any) -> tuple[Any, dict]:
    """``dag.test(**test_kwargs)`` with ``conf`` in ``workdir``; return (dag_run, {task[idx]: state})."""
    workdir.mkdir(parents=True, exist_ok=True)
    # dag.test() in-process writes the run's conf into the DAG's shared Param objects; a real
    # worker parses the DAG afresh for every task, so restore them for the next run.
    saved = [(p, copy.deepcopy(p.value)) for pd in [dag.params] + [t.params for t in dag.tasks]
             for p in (pd.get_param(k) for k in pd)]
    try:
        run = dag.test(run_conf={"stepcab_workdir": str(workdir), **(conf or {})}, **test_kwargs)
    finally:
        for param, value in saved:
            param.value = value
    return run, task_states(run)


def task_states(dag_run: Any) -> dict:
    out = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        out[key] = str(getattr(ti.state, "value", ti.state))
    return out


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """Read one XCom value of a finished run from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(XComModel.get_many(run_id=dag_run.run_id, key=key, task_ids=task_id,
                                                 dag_ids=dag_run.dag_id, map_indexes=map_index)).first()
        return None if row is None else XComModel.deserialize_value(row[0])


def group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` is still running (zombies awaiting their reaper do not count)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def wait_group_gone(pgid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.1)
    return False


def asset_event_uris(dag_run: Any) -> set:
    """URIs of the asset events a run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetModel.uri).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetEvent.source_run_id == dag_run.run_id)).all()
    return {r[0] for r in rows}


# ------------------------------------------------------------------------------------------ fixtures

RECIPE = """
cabs:
  shell:
    command: sh -c
    inputs:
      script: {dtype: str, required: true, policies: {positional: true}}
    management:
      environment: {STEPCAB_TEST_VAR: "from-{recipe.flavour}"}
      wranglers:
        'OOPS': ERROR
  python-flavour:
    command: os.getcwd
    flavour: {kind: python, output: cwd}
    outputs: {cwd: str}
hand:
  inputs:
    flavour: {dtype: str, default: vanilla}
    seconds: {dtype: int, default: 0}
  steps:
    env:
      cab: shell
      params: {script: 'echo "var=$STEPCAB_TEST_VAR venv=$VIRTUAL_ENV pwd=$(pwd)" > env.txt'}
    where:
      cab: python-flavour
    fail:
      cab: shell
      tags: [never]
      params: {script: 'for i in 1 2 3 4 5; do echo line-$i; done; exit 7'}
    oops:
      cab: shell
      tags: [never]
      params: {script: 'echo all fine; echo OOPS something; exit 0'}
    slow:
      cab: shell
      tags: [never]
      params: {script: 'sleep {recipe.seconds} & cut -d" " -f5 /proc/$$/stat > slow.pid; wait'}
    long:
      cab: shell
      tags: [never]
      params: {script: 'sleep 300 & sleep 301 & cut -d" " -f5 /proc/$$/stat > long.pid; wait'}
"""

DAG_FILE = """
import datetime, os, pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.native import StepcabNativeOperator


def record_failure(context):
    # what the task failed with, for the tests (task logs are not capturable in-process)
    workdir = context["dag_run"].conf["stepcab_workdir"]
    with open(os.path.join(workdir, "failure-" + context["ti"].task_id + ".txt"), "w") as f:
        f.write(str(context.get("exception")))


RECIPE = {recipe!r}
with DAG("stepcab_hand", schedule=None, start_date=pendulum.datetime(2024, 1, 1),
         default_args={{"on_failure_callback": record_failure}}) as dag:
    prev = None
    for label in ("env", "where", "fail", "oops", "slow", "long"):
        kw = {{"execution_timeout": datetime.timedelta(seconds=3)}} if label == "slow" else {{}}
        t = StepcabNativeOperator(task_id=label, recipe_file=RECIPE, recipe_name="hand", step_path=[label], **kw)
        if prev is not None:
            prev >> t
        prev = t
"""


def failure(workdir: Path, task_id: str) -> str:
    path = workdir / f"failure-{task_id}.txt"
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def hand(airflow_db, airflow_dags_folder, tmp_path_factory):
    base = tmp_path_factory.mktemp("hand")
    recipe = base / "hand.yml"
    recipe.write_text(RECIPE)
    path = write_dag_file(airflow_dags_folder, "stepcab_hand_dag.py", DAG_FILE.format(recipe=str(recipe)))
    return load_dags(path)["stepcab_hand"], base


def test_env_cwd_and_python_flavour(hand, tmp_path):
    dag, _ = hand
    work = tmp_path / "w"
    run, states = run_dag(dag, work, {"flavour": "mint"})
    assert states == {"env": "success", "where": "success", "fail": "skipped", "oops": "skipped",
                      "slow": "skipped", "long": "skipped"}, (states, failure(work, "env"), failure(work, "where"))
    # management.environment (with a substitution), cwd = the run's working directory, no venv
    assert (work / "env.txt").read_text().strip() == f"var=from-mint venv= pwd={work}"
    assert xcom(run, "where") == {"cwd": str(work)}  # python flavour output
    assert xcom(run, "env", "stepcab_params")["script"].startswith("echo")
    assert run.state == "success"


def test_virtual_env_from_conf_only_when_the_deployer_allows_it(hand, tmp_path, monkeypatch):
    dag, _ = hand
    conf = {"steps": {"env": {"backend": {"native": {"virtual_env": str(VENV)}}}}}
    run, states = run_dag(dag, tmp_path / "refused", conf)
    assert states["env"] == "failed" and not (tmp_path / "refused" / "env.txt").exists()
    assert ("conf.steps.env.backend.native.virtual_env: may only be set in recipe/cab files or the "
            "Airflow config") in failure(tmp_path / "refused", "env")
    monkeypatch.setenv("AIRFLOW__STEPCAB__TRIGGER_OVERRIDES_ALLOW", "backend.native.virtual_env")
    run, states = run_dag(dag, tmp_path, conf)
    assert states["env"] == "success", failure(tmp_path, "env")
    assert f"venv={VENV.resolve()} " in (tmp_path / "env.txt").read_text()  # activate names the real path


def test_backend_not_available_from_conf(hand, tmp_path):
    dag, _ = hand
    run, states = run_dag(dag, tmp_path, {"steps": {"where": {"backend": {"select": "singularity"}}}})
    assert states["env"] == "success" and states["where"] == "failed"
    assert "no usable backend (singularity: not available" in failure(tmp_path, "where")
    run, states = run_dag(dag, tmp_path / "kube", {"steps": {"where": {"backend": {"select": "kube"}}}})
    assert states["env"] == "failed"  # kube is not among the backends the recipe allows: nothing runs
    assert "'kube' not among the backends the files allow for step 'where'" in failure(tmp_path / "kube", "env")


def test_nonzero_exit_fails_with_tail(hand, tmp_path):
    dag, _ = hand
    run, states = run_dag(dag, tmp_path, {"select": ["fail"]})
    assert states["fail"] == "failed" and states["oops"] == "upstream_failed", states
    assert states["env"] == "skipped" and run.state == "failed"
    text = failure(tmp_path, "fail")
    assert "step hand.fail failed: sh returns error code 7" in text
    assert text.endswith("--- last output lines ---\nline-1\nline-2\nline-3\nline-4\nline-5")


def test_error_wrangler_fails_exit_zero(hand, tmp_path):
    dag, _ = hand
    run, states = run_dag(dag, tmp_path, {"select": ["oops"]})
    assert states["oops"] == "failed", states
    text = failure(tmp_path, "oops")
    assert "declaring 'sh' as failed based on its output" in text
    assert "all fine\nOOPS something" in text


def test_execution_timeout_kills_process_group(hand, tmp_path):
    dag, _ = hand
    run, states = run_dag(dag, tmp_path, {"select": ["slow"], "seconds": 120})
    assert states["slow"] == "failed"
    pgid = int((tmp_path / "slow.pid").read_text())
    assert wait_group_gone(pgid), f"process group {pgid} survived the execution_timeout"
    assert "AirflowTaskTimeout" in failure(tmp_path, "slow") or "Timeout" in failure(tmp_path, "slow")


def test_bad_conf_keys_fail_naming_the_key(hand, tmp_path):
    dag, _ = hand
    run, states = run_dag(dag, tmp_path, {"steps": {"nope": {"params": {}}, "env": {"params": {"bogus": 1}}}})
    assert run.state == "failed" and states["env"] == "failed"
    text = failure(tmp_path, "env")
    assert "conf.steps.nope: no step of recipe 'hand' matches" in text
    assert "conf.steps.env.params.bogus: no such parameter" in text


# ------------------------------------------------------------------------------------------ pure parts

def test_parse_overrides_rules(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text(RECIPE)
    recipe, _ = load_recipe(str(path), "hand")
    ov = parse_overrides({"flavour": "x", "steps": {"*": {"params": {"script": "a"}}, "env": {"params": {"script": "b"}},
                                                      "w*": {"skip": True}}, "tags": "never"},
                         recipe, {"seconds": 5, "flavour": "ignored", "stepcab_workdir": None})
    assert ov.recipe_params == {"seconds": 5, "flavour": "x"}
    assert ov.params_for(("env",), recipe.steps["env"].cargo) == {"script": "b"}
    assert ov.params_for(("fail",), recipe.steps["fail"].cargo) == {"script": "a"}
    assert ov.params_for(("where",), recipe.steps["where"].cargo) == {}
    assert ov.forced_skip(("where",)) is True and ov.forced_skip(("env",)) is None
    assert ov.tags == ["never"]
    with pytest.raises(RecipeError) as exc:
        parse_overrides({"bogus": 1, "select": 3, "steps": {"env": {"prams": {}}}}, recipe, {})
    text = str(exc.value)
    assert "conf.bogus: not a parameter of recipe 'hand'" in text
    assert "conf.select: expected a list" in text
    assert "conf.steps.env.prams: unknown override" in text


def test_selection_rules(tmp_path):
    """The conf's selection lists follow stimela run's -s/-k/-t/--skip-tags/-e (recipe/selection.py)."""
    path = tmp_path / "r.yml"
    path.write_text(RECIPE)
    recipe, _ = load_recipe(str(path), "hand")
    ov = parse_overrides({"select": ["fail"]}, recipe, {})
    assert ov.selection_skip(("fail",)) is None  # tagged never, selected by name
    assert "not selected" in ov.selection_skip(("env",))
    assert "never" in parse_overrides({}, recipe, {}).selection_skip(("fail",))
    assert parse_overrides({}, recipe, {}).selection_skip(("env",)) is None
    assert "not selected" in parse_overrides({"skip_steps": ["e*"]}, recipe, {}).selection_skip(("env",))
    assert parse_overrides({"tags": ["never"]}, recipe, {}).selection_skip(("slow",)) is None
    held = parse_overrides({"enable_steps": ["where"], "steps": {"env": {"skip": True}}}, recipe, {})
    assert held.forced_skip(("where",)) is False and held.forced_skip(("env",)) is True
    with pytest.raises(RecipeError) as exc:
        parse_overrides({"select": ["nope"], "skip_tags": ["nosuchtag"]}, recipe, {})
    assert "conf.select: step(s) 'nope' not in the top recipe" in str(exc.value)
    assert "conf.skip_tags: 'nosuchtag' is not a tag of any step of the top recipe" in str(exc.value)


def test_workdir_precedence(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path / "home")}
    d = choose_workdir(dag_id="d", run_id="manual__2024-01-01T00:00:00+00:00", env=env)
    assert d.source == "default"
    assert d.path == tmp_path / "home" / "stepcab-runs" / "d" / "manual__2024-01-01T00_00_00_00_00"
    assert d.path.is_dir()
    d = choose_workdir(dag_id="d", run_id="r", env={**env, "STEPCAB_WORKDIR": str(tmp_path / "e/{dag_id}")})
    assert (d.source, d.path) == ("env", tmp_path / "e" / "d")
    d = choose_workdir(dag_id="d", run_id="r", env=env, config_value="runs/{run_id}",
                       recipe_value=str(tmp_path / "rec"))
    assert (d.source, d.path) == ("recipe", tmp_path / "rec")
    d = choose_workdir(dag_id="d", run_id="r", env=env, config_value="runs/{run_id}")
    assert (d.source, d.path) == ("config", tmp_path / "home" / "runs" / "r")
    d = choose_workdir(dag_id="d", run_id="r", env=env, conf_value=str(tmp_path), recipe_value="/nope")
    assert (d.source, d.path) == ("conf", tmp_path)
    assert d.resolve("a/b.txt") == str(tmp_path / "a" / "b.txt") and d.resolve("/x") == "/x"
    with pytest.raises(ValueError, match="bad placeholder"):
        choose_workdir(dag_id="d", run_id="r", env=env, conf_value="{nope}")
    assert safe_component("a/b:c+d") == "a_b_c_d"
    assert json.dumps(str(d.path))
