"""The step cache (docs/cache.md): keys, the store, and re-runs through real Airflow.

The Airflow tests run ``tests/data/cache/cache-demo.yml`` (an in-place chain split -> flag ->
calibrate on one measurement set, image from calibrate's output, an independent summarise) again
and again in one working directory with ``dag.test()``; every command appends its name to
``executed.log``, so a test sees exactly which commands ran. ``stepcab run`` is exercised as a
subprocess for the command-line flags, resuming after a failure and two runs at once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_stepcab.plan import cache_key as K
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.runtime import step_cache as S
from slurm_cluster import slurm_cluster  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "tests" / "data" / "cache" / "cache-demo.yml"
STEPS = ("split", "flag", "calibrate", "image", "summarise")


# ------------------------------------------------------------------------------ keys (pure)

def _cab(text: str, tmp_path: Path, name: str = "c"):
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    recipe, _ = load_recipe(str(path), "r")
    return recipe.steps["s"].cab


CAB = """{pad}cabs:
  c:
    info: {info}
    command: {command}
    inputs:
      x: {{dtype: File, policies: {{positional: true}}}}
      n: {{dtype: int, default: 1}}
r:
  steps:
    s: {{cab: c, params: {{x: a.txt}}}}
"""


def test_cab_definition_ignores_locations_and_help_but_not_the_command(tmp_path):
    base = _cab(CAB.format(pad="", info="one", command="cat"), tmp_path, "a")
    moved = _cab(CAB.format(pad="# a comment\n\n", info="other help", command="cat"), tmp_path, "b")
    other = _cab(CAB.format(pad="", info="one", command="tac"), tmp_path, "c")
    assert K.cab_definition(base) == K.cab_definition(moved)
    assert K.cab_definition(base) != K.cab_definition(other)


def _doc(cab, params, provenance=None, stats=None):
    stats = stats or {}
    return K.key_document(cab=cab, backend="native", params=params, workdir="/w", provenance=provenance or {},
                          describe=lambda p: stats.get(p, {"files": 1, "digest": "d0"}))


def test_key_covers_params_inputs_and_producers_and_explains_them(tmp_path):
    cab = _cab(CAB.format(pad="", info="one", command="cat"), tmp_path)
    first = _doc(cab, {"x": "a.txt", "n": 1})
    assert K.step_key(first) == K.step_key(_doc(cab, {"n": 1, "x": "/w/a.txt"}))  # relative = absolute
    assert first["inputs"]["x"] == [{"path": "/w/a.txt", "files": 1, "digest": "d0"}]
    changed = _doc(cab, {"x": "a.txt", "n": 2})
    assert K.step_key(changed) != K.step_key(first)
    assert K.explain(first, changed) == ["param n: 1 -> 2"]
    touched = _doc(cab, {"x": "a.txt", "n": 1}, stats={"/w/a.txt": {"files": 1, "digest": "d1", "newest": "t1"}})
    assert K.explain(first, touched) == ["input x: /w/a.txt changed (newest mtime None -> t1)"]
    produced = _doc(cab, {"x": "a.txt", "n": 1}, {"/w": {"key": "k1", "step": "r.mk"}})  # a file in a produced dir
    assert produced["inputs"]["x"] == [{"path": "/w/a.txt", "from": "k1", "step": "r.mk"}]
    again = _doc(cab, {"x": "a.txt", "n": 1}, {"/w": {"key": "k2", "step": "r.mk"}})
    assert K.explain(produced, again) == ["input x: /w/a.txt comes from step 'r.mk', whose key changed"]
    assert K.explain(None, first) == ["no earlier record of this step"]


def test_provenance_merge_does_not_depend_on_order():
    a = {"/m.ms": {"key": "ka", "step": "a"}, "/x": {"key": "kx", "step": "x"}}
    b = {"/m.ms": {"key": "kb", "step": "b"}}
    ab, ba = K.merge_provenance([a, b]), K.merge_provenance([b, a])
    assert ab == ba and ab["/x"]["key"] == "kx" and ab["/m.ms"]["key"] not in ("ka", "kb")
    assert K.merge_provenance([a, a]) == {k: {"key": v["key"], "step": v["step"]} for k, v in a.items()}


def test_describe_path_by_stat_and_by_content(tmp_path):
    ms = tmp_path / "obs.ms"
    (ms / "sub").mkdir(parents=True)
    (ms / "table.dat").write_text("1")
    (ms / "sub" / "f").write_text("22")
    before = S.describe_path(str(ms))
    assert before["files"] == 2 and before["bytes"] == 3
    content = S.describe_path(str(ms), content_hash=True)
    os.utime(ms / "sub" / "f", ns=(1, 10 ** 18))
    assert S.describe_path(str(ms))["digest"] != before["digest"]
    assert S.describe_path(str(ms), content_hash=True)["digest"] == content["digest"]
    assert S.describe_path(str(tmp_path / "nope")) == {"missing": True}


def _writer(root: str, worker: int, count: int) -> None:
    store = S.StepCache(root)
    for i in range(count):
        key = f"{i % 7:064x}" if worker % 2 else f"{worker:02x}{i:062x}"  # shared and own keys
        store.put({"key": key, "ident": f"r.s{i % 3}", "worker": worker, "params": {"i": i}})


def test_concurrent_writers_lose_no_record(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = S.StepCache(tmp_path)
    keys = {r["key"] for r in store.records()}
    own = {f"{w:02x}{i:062x}" for w in (0, 2) for i in range(60)}
    assert own | {f"{i:064x}" for i in range(7)} == keys                       # every key, readable
    assert not list(tmp_path.rglob("*.tmp"))                                    # no half-written file
    assert all(store.latest(f"r.s{i}") is not None for i in range(3))


# ------------------------------------------------------------------------------ through Airflow

@pytest.fixture(scope="module")
def demo(airflow_db, airflow_dags_folder):
    from test_native_operator import load_dags, write_dag_file

    text = ("from airflow_provider_stepcab.dag_factory import build_recipe_dag\n"
            f"dag = build_recipe_dag({str(RECIPE)!r}, 'cache-demo')\n")
    return load_dags(write_dag_file(airflow_dags_folder, "stepcab_cache_demo.py", text))["cache-demo"]


class Runs:
    """Runs of the demo DAG in one working directory; ``ran`` = commands executed by the last run."""

    def __init__(self, dag, workdir: Path):
        self.dag, self.workdir = dag, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "raw.txt").write_text("raw data\n")
        (workdir / "other.txt").write_text("other data\n")
        self.seen = 0

    def run(self, conf=None):
        from test_native_operator import run_dag

        run, states = run_dag(self.dag, self.workdir, conf or {})
        log = (self.workdir / "executed.log").read_text().split() if (self.workdir / "executed.log").exists() else []
        self.ran, self.seen = log[self.seen:], len(log)
        return run, states

    def ran_and_states(self, states: dict) -> tuple:
        return set(self.ran), {t for t in STEPS if states[t] == "success"}


def mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))
            if p.is_file() and ".stepcab" not in p.parts and p.name != "executed.log"}


def xcoms(run) -> dict:
    from test_native_operator import xcom

    return {(t, k): xcom(run, t, k) for t in STEPS for k in ("stepcab_params", "return_value")}


def test_reruns_skip_exactly_the_unchanged_steps(demo, tmp_path, capfd):
    runs = Runs(demo, tmp_path / "w")
    first, states = runs.run()
    assert set(states.values()) == {"success"} and runs.ran == list(STEPS)
    before, published = mtimes(runs.workdir), xcoms(first)

    # unchanged: every step cached, no command ran, outputs untouched, the same XComs downstream
    second, states = runs.run()
    out = capfd.readouterr().out
    assert set(states.values()) == {"skipped"} and runs.ran == [] and second.state == "success"
    assert mtimes(runs.workdir) == before
    assert xcoms(second) == published
    assert f"cache: cache-demo.image cached: the result of run {first.run_id} of DAG cache-demo, task image" in out
    from test_native_operator import xcom

    shown = xcom(second, "image", "stepcab_step")  # the Step view's record says why it did not run
    assert shown["cache"].startswith(f"cached: the result of run {first.run_id} of DAG cache-demo, task image")

    # one param of the last imaging step: that step only, and the log says which param
    third, states = runs.run({"niter": 20})
    out = capfd.readouterr().out
    assert runs.ran_and_states(states) == ({"image"}, {"image"})
    assert "cache: cache-demo.image runs (against its newest record" in out and "param niter: 10 -> 20" in out
    assert "param niter: 10 -> 20" in xcom(third, "image", "stepcab_step")["cache"]

    # the in-place chain: changing flag reruns flag and what reads the MS after it, not split
    _, states = runs.run({"niter": 20, "mode": "b"})
    out = capfd.readouterr().out
    assert runs.ran_and_states(states) == ({"flag", "calibrate", "image"},) * 2
    assert "input ms: " + str(runs.workdir / "obs.ms") + " comes from step 'cache-demo.flag', whose key changed" in out
    assert states["split"] == states["summarise"] == "skipped"

    # a raw input touched: its consumer runs (and nothing else)
    os.utime(runs.workdir / "other.txt", ns=(time.time_ns(), time.time_ns()))
    _, states = runs.run({"niter": 20, "mode": "b"})
    out = capfd.readouterr().out
    assert runs.ran_and_states(states) == ({"summarise"},) * 2
    assert "input raw: " + str(runs.workdir / "other.txt") + " changed" in out

    # an output deleted: the step that wrote it runs
    (runs.workdir / "gains.txt").unlink()
    _, states = runs.run({"niter": 20, "mode": "b"})
    assert runs.ran_and_states(states) == ({"calibrate"},) * 2 and (runs.workdir / "gains.txt").exists()

    # back to the first values: all of them are records already
    _, states = runs.run()
    assert runs.ran == [] and set(states.values()) == {"skipped"}

    # the run conf: off runs everything and records nothing new; refresh runs everything
    store = S.StepCache(runs.workdir / ".stepcab" / "step-cache")
    count = len(list(store.records()))
    off, states = runs.run({"stepcab_cache": "off"})
    assert runs.ran == list(STEPS) and len(list(store.records())) == count
    from test_native_operator import xcom

    assert xcom(off, "image", "stepcab_cache") is None                           # no cache work at all
    refresh, states = runs.run({"stepcab_cache": "refresh"})
    assert runs.ran == list(STEPS)
    assert {store.latest(f"cache-demo.{s}")["run_id"] for s in STEPS} == {refresh.run_id}


def test_cache_off_unless_asked_and_per_task_settings(demo, tmp_path, airflow_dags_folder):
    """``tasks.<glob>.cache`` turns the cache on for some steps only; the conf turns it on for every step."""
    from test_native_operator import load_dags, write_dag_file

    text = RECIPE.read_text().replace("    cache: true\n", "    dag_id: cache-partial\n    tasks:\n      summarise: {cache: true}\n")
    recipe = tmp_path / "partial.yml"
    recipe.write_text(text)
    dag_text = ("from airflow_provider_stepcab.dag_factory import build_recipe_dag\n"
                f"dag = build_recipe_dag({str(recipe)!r}, 'cache-demo')\n")
    dag = load_dags(write_dag_file(airflow_dags_folder, "stepcab_cache_partial.py", dag_text))["cache-partial"]
    runs = Runs(dag, tmp_path / "w")
    _, states = runs.run({"stepcab_cache": "on"})    # the conf turns it on for every step: all recorded
    assert runs.ran == list(STEPS)
    _, states = runs.run()                           # the recipe: only summarise looks its record up
    assert runs.ran_and_states(states) == ({"split", "flag", "calibrate", "image"},) * 2
    assert states["summarise"] == "skipped"
    _, states = runs.run({"stepcab_cache": "on"})
    assert runs.ran == [] and set(states.values()) == {"skipped"}


def test_bad_cache_value_is_refused_by_the_form_and_the_conf_check(demo, tmp_path):
    from airflow.sdk.exceptions import ParamValidationError

    from airflow_provider_stepcab.operators.overrides import parse_overrides
    from airflow_provider_stepcab.recipe.errors import RecipeError

    runs = Runs(demo, tmp_path / "w")
    with pytest.raises(ParamValidationError, match="stepcab_cache"):   # the trigger form's enum
        runs.run({"stepcab_cache": "sometimes"})
    recipe, loaded = load_recipe(str(RECIPE), "cache-demo")
    with pytest.raises(RecipeError, match=r"conf.stepcab_cache: expected one of on, off, refresh, got 'sometimes'"):
        parse_overrides({"stepcab_cache": "sometimes"}, recipe, config_tree=loaded.tree)
    assert parse_overrides({"stepcab_cache": "refresh"}, recipe, config_tree=loaded.tree).recipe_params == {}


# ------------------------------------------------------------------------------ stepcab run / plan / cache

@pytest.fixture
def homes(airflow_db, tmp_path):
    """``homes(name)``: an Airflow home for ``stepcab run`` holding a copy of the session's migrated
    database (``run_db`` reuses it as it is: no migration per run)."""
    from airflow_provider_stepcab.run_db import DB_NAME, MARKER, airflow_version

    def make(name: str) -> Path:
        home = tmp_path / name
        home.mkdir()
        shutil.copy(airflow_db / DB_NAME, home / DB_NAME)
        (home / MARKER).write_text(airflow_version())
        return home

    return make


def stepcab(workdir: Path, *args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["STEPCAB_AIRFLOW_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_stepcab_run_resumes_after_a_failure_and_cli(tmp_path, homes):
    work, home = tmp_path / "w", homes("home")
    work.mkdir()
    (work / "raw.txt").write_text("raw\n")
    recipe = tmp_path / "nocache.yml"
    recipe.write_text(RECIPE.read_text().replace("    cache: true\n", "    {}\n"))
    failed = stepcab(work, "run", str(recipe), "--cache", home=home)      # other.txt is missing
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "summarise  failed" in failed.stderr and (work / "executed.log").read_text().split() == list(STEPS[:4])
    plan = stepcab(work, "plan", str(recipe), "--cache", home=home)
    assert plan.returncode == 0, plan.stderr
    lines = {ln.split()[0]: ln for ln in plan.stdout.splitlines()[1:]}
    assert "cached (run manual__" in lines["cache-demo.split"] and "task split" in lines["cache-demo.split"]
    assert "runs: no earlier record of this step" in lines["cache-demo.summarise"]
    (work / "other.txt").write_text("other\n")
    resumed = stepcab(work, "run", str(recipe), "--cache", home=home)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (work / "executed.log").read_text().split() == [*STEPS[:4], "summarise"]
    plan = stepcab(work, "plan", str(recipe), "--cache", "-p", "niter=4", home=home)
    assert "runs: param niter: 10 -> 4" in next(ln for ln in plan.stdout.splitlines() if "cache-demo.image" in ln)

    listing = stepcab(work, "cache", "ls", "--json", home=home)
    records = json.loads(listing.stdout)
    assert len(records) == 5 and {r["ident"] for r in records} == {f"cache-demo.{s}" for s in STEPS}
    key = next(r["key"] for r in records if r["ident"] == "cache-demo.image")
    shown = json.loads(stepcab(work, "cache", "show", key[:10], home=home).stdout)
    assert shown["key"] == key and shown["document"]["cab"]["name"] == "make-image"
    cleared = stepcab(work, "cache", "clear", "--step", "im*", home=home)
    assert cleared.returncode == 0 and "removed 1 record(s)" in cleared.stderr
    assert len(json.loads(stepcab(work, "cache", "ls", "--json", home=home).stdout)) == 4
    assert stepcab(work, "cache", "clear", home=home).returncode == 2                 # says what to drop


def test_two_runs_at_once_both_complete_and_the_store_stays_consistent(tmp_path, homes):
    work = tmp_path / "w"
    work.mkdir()
    (work / "raw.txt").write_text("raw\n")
    (work / "other.txt").write_text("other\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, "-m", "airflow_provider_stepcab", "run", str(RECIPE),
                               "--airflow-home", str(homes(f"home{i}")), f"niter={10 + i}"],
                              cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    store = S.StepCache(work / ".stepcab" / "step-cache")
    records = list(store.records())
    assert len({r["key"] for r in records}) == len(records)
    images = [r for r in records if r["ident"] == "cache-demo.image"]
    assert sorted(r["params"]["niter"] for r in images) == [10, 11]              # no record lost
    assert {r["ident"] for r in records} == {f"cache-demo.{s}" for s in STEPS}
    assert not list(store.root.rglob("*.tmp"))
    for niter in (10, 11):  # either run's values: every step is cached
        plan = stepcab(work, "plan", str(RECIPE), "--cache", "-p", f"niter={niter}", home=tmp_path)
        statuses = [ln.split()[1] for ln in plan.stdout.splitlines()[1:]]
        assert statuses == ["cached"] * 5, plan.stdout


# ------------------------------------------------------------------------------ Slurm

SLURM_RECIPE = """
opts:
  airflow: {{cache: true, dag_id: cache-slurm}}
cabs:
  write:
    command: sh -c 'echo "n=$1 on $(hostname)" > "$0"; echo "job ran"'
    inputs:
      n: {{dtype: int, default: 1, policies: {{positional: true}}}}
    outputs:
      out: {{dtype: File, required: true, policies: {{positional_head: true}}}}
slurm-cache:
  backend:
    select: native
    slurm:
      enable: true
      ssh_conn_id: stepcab_cluster
      remote_dir: stepcab-jobs
      remote_workdir: {remote}
      poll_interval: 1
      exit_grace: 20
      srun_opts: {{mem: 100M, cpus-per-task: 1, time: "0:05:00"}}
  steps:
    write:
      cab: write
      params: {{out: out.txt}}
"""


@pytest.mark.slow
def test_slurm_step_cached_across_runs_with_outputs_on_the_cluster(slurm_cluster, airflow_db, airflow_dags_folder,
                                                                   tmp_path, capfd):
    """The job runs in ``remote_workdir``, so the output exists only there: a hit is decided by
    the SFTP check on the cluster, and deleting the file there makes the step run again."""
    from test_native_operator import load_dags, run_dag, write_dag_file, xcom
    from test_slurm_operator import shared_workdir

    local, remote = shared_workdir(slurm_cluster, "cache-local"), shared_workdir(slurm_cluster, "cache-remote")
    recipe = tmp_path / "slurm-cache.yml"
    recipe.write_text(SLURM_RECIPE.format(remote=remote))
    text = ("from airflow_provider_stepcab.dag_factory import build_recipe_dag\n"
            f"dag = build_recipe_dag({str(recipe)!r}, 'slurm-cache')\n")
    dag = load_dags(write_dag_file(airflow_dags_folder, "stepcab_cache_slurm.py", text))["cache-slurm"]
    first, states = run_dag(dag, local)
    assert states == {"write": "success"}, capfd.readouterr().out[-3000:]
    assert (remote / "out.txt").exists() and not (local / "out.txt").exists()
    job = xcom(first, "write", "slurm_job")
    second, states = run_dag(dag, local)
    out = capfd.readouterr().out
    assert states == {"write": "skipped"} and xcom(second, "write", "slurm_job") is None   # no job submitted
    assert f"cache: slurm-cache.write cached: the result of run {first.run_id}" in out
    assert xcom(second, "write") == xcom(first, "write") == {"out": "out.txt"}
    (remote / "out.txt").unlink()
    third, states = run_dag(dag, local)
    out = capfd.readouterr().out
    assert states == {"write": "success"} and xcom(third, "write", "slurm_job")["job_id"] != job["job_id"]
    assert "lists outputs that are gone: " + str(local / "out.txt") in out
