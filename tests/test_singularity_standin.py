"""StepcabSingularityOperator through the Apptainer STAND-IN (``tests/standins/apptainer``).

No real Singularity/Apptainer exists for these machines; the stand-in checks the argv against
Apptainer's CLI grammar and carries ``exec`` out with a real ``podman run`` of a local image, so
binds, ``--pwd`` and ``--env`` must be right for a step to succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from container_helpers import IMAGE, STANDINS, ensure_test_image, podman, standin_env
from test_native_operator import failure, load_dags, run_dag, write_dag_file

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SING_IMAGE = "quay.io/stimela2/stepcab-test:cc0.2.1"

RECIPE = """
opts:
  backend:
    select: singularity,native
    singularity:
      image_dir: {image_dir}
      env: {{GREETING: hello}}
cabs:
  upper:
    image: {{_use: vars.img, name: stepcab-test}}
    command: sh -c 'tr a-z A-Z < "$0" > "$1" && echo "$GREETING $STEPCAB_VAR $(pwd)" > "$1.env"'
    inputs: {{infile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
    outputs: {{outfile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
    management: {{environment: {{STEPCAB_VAR: "from-{{recipe.tag}}"}}}}
  shell:
    image: {{_use: vars.img, name: stepcab-test}}
    command: sh -c
    inputs: {{script: {{dtype: str, required: true, policies: {{positional: true}}}}}}
  nativecab:
    command: sh -c 'echo native > native.txt'
vars:
  img: {{registry: quay.io/stimela2, version: cc0.2.1}}
stest:
  inputs:
    src: File
    dest: File
    tag: {{dtype: str, default: x}}
  steps:
    upper:
      cab: upper
      params: {{infile: =recipe.src, outfile: =recipe.dest}}
    plain:
      cab: nativecab
    fail:
      cab: shell
      tags: [never]
      params: {{script: 'echo bad; exit 3'}}
    badbind:
      cab: shell
      tags: [never]
      backend: {{singularity: {{bind_dirs: {{gone: {{host: /nonexistent/stepcab-dir}}}}}}}}
      params: {{script: 'true'}}
"""

DAG_FILE = """
import os, pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.singularity import StepcabSingularityOperator


def record_failure(context):
    workdir = context["dag_run"].conf["stepcab_workdir"]
    with open(os.path.join(workdir, "failure-" + context["ti"].task_id + ".txt"), "w") as f:
        f.write(str(context.get("exception")))


with DAG("stepcab_sing", schedule=None, start_date=pendulum.datetime(2024, 1, 1),
         default_args={{"on_failure_callback": record_failure}}) as dag:
    prev = None
    for label in ("upper", "plain", "fail", "badbind"):
        t = StepcabSingularityOperator(task_id=label, recipe_file={recipe!r}, recipe_name="stest", step_path=[label])
        if prev is not None:
            prev >> t
        prev = t
"""


@pytest.fixture(scope="module")
def sdag(airflow_db, airflow_dags_folder, tmp_path_factory):
    ensure_test_image()
    podman("tag", IMAGE, SING_IMAGE)
    base = tmp_path_factory.mktemp("sing")
    recipe = base / "sing.yml"
    recipe.write_text(RECIPE.format(image_dir=str(base / "images")))
    path = write_dag_file(airflow_dags_folder, "stepcab_sing_dag.py", DAG_FILE.format(recipe=str(recipe)))
    return load_dags(path)["stepcab_sing"], base


@pytest.fixture
def standin_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    for k, v in standin_env().items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "standin.jsonl"
    monkeypatch.setenv("STEPCAB_STANDIN_LOG", str(log))
    return log


def _inputs(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "w.txt").write_text("through a bind\n")
    return {"src": str(tmp_path / "in" / "w.txt"), "dest": str(tmp_path / "out" / "W.txt"), "tag": "t1"}


def test_build_then_exec_through_standin(sdag, tmp_path, standin_path):
    dag, base = sdag
    run, states = run_dag(dag, tmp_path / "w", _inputs(tmp_path))
    assert states == {"upper": "success", "plain": "success", "fail": "skipped", "badbind": "skipped"}, (
        states, failure(tmp_path / "w", "upper"))
    assert (tmp_path / "out" / "W.txt").read_text() == "THROUGH A BIND\n"
    # singularity.env and management.environment reach the container; --pwd is the workdir
    assert (tmp_path / "out" / "W.txt.env").read_text().strip() == f"hello from-t1 {tmp_path / 'w'}"
    calls = [json.loads(line) for line in standin_path.read_text().splitlines()]
    assert calls[0][:2] == ["apptainer", "build"] and calls[0][3] == f"docker://{SING_IMAGE}"
    assert calls[0][2] == str(base / "images" / "quay.io-stimela2-stepcab-test:cc0.2.1.simg")
    exec_argv = calls[1]
    assert exec_argv[:5] == ["apptainer", "exec", "--pwd", str(tmp_path / "w"), "--contain"]
    assert f"{tmp_path}/in:{tmp_path}/in:ro" in exec_argv and f"{tmp_path}/out:{tmp_path}/out:rw" in exec_argv
    assert len(calls) == 2  # the image-less cab ran natively (select: singularity,native)
    assert (tmp_path / "w" / "native.txt").read_text().strip() == "native"


def test_nonzero_exit_and_missing_bind_source_fail(sdag, tmp_path, standin_path):
    dag, _ = sdag
    run, states = run_dag(dag, tmp_path / "w", {**_inputs(tmp_path), "select": ["fail", "badbind"]})
    assert states["fail"] == "failed", states
    assert "sh returns error code 3" in failure(tmp_path / "w", "fail")
    run, states = run_dag(dag, tmp_path / "w2", {**_inputs(tmp_path / "w"), "select": ["badbind"]})
    assert states["badbind"] == "failed"
    assert "host path '/nonexistent/stepcab-dir' does not exist" in failure(tmp_path / "w2", "badbind")


def test_missing_runtime_is_a_clear_error(sdag, tmp_path, monkeypatch):
    dag, _ = sdag
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    run, states = run_dag(dag, tmp_path / "w", _inputs(tmp_path))
    assert states["upper"] == "failed"
    assert "neither 'apptainer' nor 'singularity' is on PATH" in failure(tmp_path / "w", "upper")


# --------------------------------------------------------------- the stand-in itself (grammar, fidelity)

def _standin(*args, cwd=None):
    env = {**os.environ, **standin_env()}
    return subprocess.run([str(STANDINS / "apptainer"), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_standin_rejects_what_apptainer_rejects(tmp_path):
    assert _standin("--version").stdout.startswith("apptainer version")
    bad = _standin("exec", "--no-such-flag", "x.simg", "true")
    assert bad.returncode == 255 and "unknown flag: --no-such-flag" in bad.stderr
    assert "unknown command \"run-help\"" in _standin("run-help").stderr
    assert _standin("exec", "--pwd").returncode == 255            # flag needs an argument
    assert "requires at least 2 arg" in _standin("exec", "img.simg").stderr
    assert "no such file or directory" in _standin("exec", str(tmp_path / "none.simg"), "true").stderr


def test_standin_wrong_bind_makes_the_command_fail(tmp_path):
    ensure_test_image()
    simg = tmp_path / "t.simg"
    assert _standin("build", str(simg), f"docker://{IMAGE}").returncode == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.txt").write_text("x\n")
    (tmp_path / "w").mkdir()
    ok = _standin("exec", "--pwd", str(tmp_path / "w"), "--contain", "--bind",
                  f"{tmp_path}/w:{tmp_path}/w:rw,{tmp_path}/data:{tmp_path}/data:ro", str(simg),
                  "cat", f"{tmp_path}/data/f.txt")
    assert ok.returncode == 0 and ok.stdout == "x\n", ok.stderr
    unbound = _standin("exec", "--pwd", str(tmp_path / "w"), "--contain", "--bind", f"{tmp_path}/w:{tmp_path}/w:rw",
                       str(simg), "cat", f"{tmp_path}/data/f.txt")
    assert unbound.returncode != 0
    readonly = _standin("exec", "--pwd", str(tmp_path / "w"), "--contain", "--bind",
                        f"{tmp_path}/w:{tmp_path}/w:ro", str(simg), "touch", "new")
    assert readonly.returncode != 0
    missing = _standin("exec", "--contain", "--bind", f"{tmp_path}/nope:/x", str(simg), "true")
    assert missing.returncode == 255 and "mount source" in missing.stderr


def test_stepcab_build_builds_skips_and_rebuilds(tmp_path):
    ensure_test_image()
    podman("tag", IMAGE, SING_IMAGE)
    recipe = tmp_path / "b.yml"
    recipe.write_text(RECIPE.format(image_dir=str(tmp_path / "images")))
    env = {**os.environ, **standin_env(), "PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}"}

    def build(*extra):
        return subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "build", str(recipe), *extra],
                              capture_output=True, text=True, env=env, timeout=300)

    first = build()
    assert first.returncode == 0, first.stderr
    assert f"[1/1] singularity {SING_IMAGE}: building" in first.stdout and "done in" in first.stdout
    assert (tmp_path / "images" / "quay.io-stimela2-stepcab-test:cc0.2.1.simg").exists()
    again = build()
    assert again.returncode == 0 and f"[1/1] singularity {SING_IMAGE}: present" in again.stdout
    forced = build("-r")
    assert forced.returncode == 0 and "rebuilding" in forced.stdout
    pod = build("-b", "podman")   # the podman section is not set here: default storage lacks the image
    assert "[1/1] podman" in pod.stdout
