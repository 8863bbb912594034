"""``opts.airflow.build_images: true``: the DAG's first task builds/pulls the steps' images.

The structure tests only build DAGs; the run tests go through real ``dag.test()`` with the Apptainer
STAND-IN (``tests/standins/apptainer``, see ``test_singularity_standin.py``) on PATH: the build task
"builds" the ``.simg`` (the stand-in needs the docker name in the local podman storage), then the
step runs in it.
"""

from __future__ import annotations

import json
import os
import textwrap
from types import SimpleNamespace

import pytest

from container_helpers import IMAGE, STANDINS, ensure_test_image, podman, standin_env
from test_native_operator import failure, load_dags, run_dag, write_dag_file

pytestmark = pytest.mark.airflow

BUILD = "stepcab_build_images"
SING_IMAGE = "quay.io/stimela2/stepcab-test:cc0.2.1"

SHAPE = """
opts:
  airflow:
    build_images: {flag}
    parallel: dataflow
cabs:
  touch:
    command: touch
    outputs: {{out: {{dtype: File, required: true, policies: {{positional: true}}}}}}
  cat:
    command: cat
    inputs: {{files: {{dtype: "List[File]", required: true, policies: {{positional: true, repeat: list}}}}}}
shape:
  steps:
    left:
      cab: touch
      params: {{out: left.txt}}
    right:
      cab: touch
      params: {{out: right.txt}}
    join:
      cab: cat
      params: {{files: [=steps.left.out, =steps.right.out]}}
    fan:
      recipe:
        for_loop: {{var: x, over: [a, b]}}
        steps:
          one:
            cab: touch
            params: {{out: "{{recipe.x}}.txt"}}
"""


def _dags(tmp_path, text, name="shape.yml"):
    from airflow_provider_stepcab.dag_factory import build_dags

    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return build_dags(files=[str(path)], on_error="raise")


def test_build_task_is_upstream_of_every_root(tmp_path):
    dag = _dags(tmp_path, SHAPE.format(flag="true"))["shape"]
    build = dag.task_dict[BUILD]
    assert type(build).__name__ == "StepcabBuildImagesOperator"
    assert build.upstream_task_ids == set()
    assert dag.roots == [build]
    # every step task (the mapped loop group's too) is downstream of it
    steps = {t.task_id for t in dag.tasks} - {BUILD}
    assert steps == {"left", "right", "join", "fan.one"}
    assert build.get_flat_relative_ids(upstream=False) == steps
    assert {"left", "right", "fan.one"} == build.downstream_task_ids
    assert (build.recipe_file, build.recipe_name) == (str(tmp_path / "shape.yml"), "shape")


def test_build_task_is_opt_in(tmp_path):
    dag = _dags(tmp_path, SHAPE.format(flag="false"))["shape"]
    assert BUILD not in dag.task_dict
    dag = _dags(tmp_path, SHAPE.replace("    build_images: {flag}\n", "").format(), "plain.yml")["plain__shape"]
    assert BUILD not in dag.task_dict


def test_bad_setting_and_id_clash_are_errors(tmp_path):
    from airflow_provider_stepcab.dag_factory import RecipeImportError

    with pytest.raises(RecipeImportError, match="opts.airflow.build_images: expected true or false"):
        _dags(tmp_path, SHAPE.format(flag="'yes'"))
    clash = SHAPE.format(flag="true").replace("    left:\n", "    stepcab_build_images:\n").replace(
        "=steps.left.out", "=steps.stepcab_build_images.out")
    with pytest.raises(RecipeImportError, match="is the image build task's"):
        _dags(tmp_path, clash, "clash.yml")


# ------------------------------------------------------------------ real runs through the stand-in

RECIPE = """
opts:
  airflow:
    build_images: true
  backend:
    select: singularity,native
    singularity:
      image_dir: {image_dir}
cabs:
  upper:
    image: {{registry: quay.io/stimela2, name: stepcab-test, version: cc0.2.1}}
    command: sh -c 'tr a-z A-Z < "$0" > "$1"'
    inputs: {{infile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
    outputs: {{outfile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
  missing:
    image: {{registry: quay.io/stimela2, name: stepcab-no-such-image, version: cc0.2.1}}
    command: "true"
  nativecab:
    command: sh -c 'echo native > native.txt'
imgbuild:
  inputs:
    src: File
    dest: File
  steps:
    upper:
      cab: upper
      params: {{infile: =recipe.src, outfile: =recipe.dest}}
    plain:
      cab: nativecab
imgbuild-missing:
  steps:
    plain:
      cab: nativecab
    nope:
      cab: missing
"""

LOADER = """
import os
from airflow_provider_stepcab.dag_factory import build_dags


def record_failure(context):
    workdir = context["dag_run"].conf["stepcab_workdir"]
    with open(os.path.join(workdir, "failure-" + context["ti"].task_id + ".txt"), "w") as f:
        f.write(str(context.get("exception")))


for _dag in build_dags(globals(), files=[{recipe!r}], on_error="raise").values():
    for _task in _dag.tasks:
        _task.on_failure_callback = [record_failure]
"""


@pytest.fixture(scope="module")
def bdags(airflow_db, airflow_dags_folder, tmp_path_factory):
    ensure_test_image()
    podman("tag", IMAGE, SING_IMAGE)
    base = tmp_path_factory.mktemp("imgbuild")
    recipe = base / "imgbuild.yml"
    recipe.write_text(RECIPE.format(image_dir=str(base / "images")))
    path = write_dag_file(airflow_dags_folder, "stepcab_imgbuild_dag.py", LOADER.format(recipe=str(recipe)))
    return load_dags(path), base


@pytest.fixture
def standin_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    for k, v in standin_env().items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "standin.jsonl"
    monkeypatch.setenv("STEPCAB_STANDIN_LOG", str(log))
    return log


def _calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_first_task_builds_the_image_then_the_step_runs(bdags, tmp_path, standin_path):
    from test_native_operator import xcom

    dags, base = bdags
    dag = dags["imgbuild"]
    simg = base / "images" / "quay.io-stimela2-stepcab-test:cc0.2.1.simg"
    (tmp_path / "in.txt").write_text("built first\n")
    conf = {"src": str(tmp_path / "in.txt"), "dest": str(tmp_path / "out" / "OUT.txt")}
    run, states = run_dag(dag, tmp_path / "w", conf)
    assert states == {BUILD: "success", "upper": "success", "plain": "success"}, (
        states, failure(tmp_path / "w", BUILD), failure(tmp_path / "w", "upper"))
    assert simg.exists()
    calls = _calls(standin_path)
    # the build task built the image; the step found it and only ran exec
    assert [c[:2] for c in calls] == [["apptainer", "build"], ["apptainer", "exec"]], calls
    assert calls[0][2:] == [str(simg), f"docker://{SING_IMAGE}"]
    assert (tmp_path / "out" / "OUT.txt").read_text() == "BUILT FIRST\n"
    assert xcom(run, BUILD) == {f"singularity {SING_IMAGE}": "built"}

    # a second run: the image is present, nothing is built
    standin_path.unlink()
    run, states = run_dag(dag, tmp_path / "w2", {**conf, "dest": str(tmp_path / "out2.txt")})
    assert set(states.values()) == {"success"}, states
    assert [c[1] for c in _calls(standin_path)] == ["exec"]
    assert xcom(run, BUILD) == {f"singularity {SING_IMAGE}": "present"}


@pytest.mark.slow
def test_failed_build_fails_the_task_and_no_step_starts(bdags, tmp_path, standin_path):
    dags, base = bdags
    run, states = run_dag(dags["imgbuild__imgbuild-missing"], tmp_path / "w")
    assert states == {BUILD: "failed", "plain": "upstream_failed", "nope": "upstream_failed"}, states
    why = failure(tmp_path / "w", BUILD)
    assert "1 of 1 image(s) could not be built/pulled" in why, why
    assert "quay.io/stimela2/stepcab-no-such-image:cc0.2.1" in why and "[step imgbuild-missing.nope]" in why, why
    assert not (tmp_path / "w" / "native.txt").exists()


def test_missing_runtime_and_native_only_runs(tmp_path, monkeypatch):
    """execute() directly: no runtime on PATH is a clear error; a native selection needs nothing."""
    from airflow.sdk.exceptions import AirflowException

    from airflow_provider_stepcab.operators.build import StepcabBuildImagesOperator

    recipe = tmp_path / "r.yml"
    recipe.write_text(RECIPE.format(image_dir=str(tmp_path / "images")))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    op = StepcabBuildImagesOperator(task_id=BUILD, recipe_file=str(recipe), recipe_name="imgbuild")
    ctx = {"params": {}, "dag_run": SimpleNamespace(conf={})}
    with pytest.raises(AirflowException, match="neither 'apptainer' nor 'singularity' is on PATH"):
        op.execute(ctx)
    # a conf backend override (as the step tasks take it) or a deselected step: nothing to build
    assert op.execute({"params": {}, "dag_run": SimpleNamespace(conf={"steps": {"*": {"backend": {
        "select": "native"}}}})}) == {}
    assert op.execute({"params": {}, "dag_run": SimpleNamespace(conf={"select": ["plain"]})}) == {}
    native = StepcabBuildImagesOperator(task_id=BUILD, recipe_file=str(recipe), recipe_name="imgbuild",
                                        backend="native")
    assert native.execute(ctx) == {}
    with pytest.raises(AirflowException, match="conf.steps.bogus"):
        op.execute({"params": {}, "dag_run": SimpleNamespace(conf={"steps": {"bogus": {}}})})
