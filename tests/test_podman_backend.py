"""StepcabPodmanOperator with real podman (``dag.test()``), on an image built locally and offline.

Inputs are read through binds from outside the working directory, outputs land on the host with the
container user's ownership, a non-zero exit fails the task, and killing the task stops the container.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from container_helpers import PODMAN_SETTINGS, containers_named, ensure_test_image
from test_native_operator import failure, load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

RECIPE = """
opts:
  backend:
    select: podman
    podman: {settings}
cabs:
  upper:
    image: {{registry: localhost, name: stepcab-test, version: latest}}
    command: sh -c 'tr a-z A-Z < "$0" > "$1" && id -u > "$1.uid" && pwd > "$1.pwd"'
    inputs: {{infile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
    outputs: {{outfile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
  shell:
    image: {{registry: localhost, name: stepcab-test, version: latest}}
    command: sh -c
    inputs: {{script: {{dtype: str, required: true, policies: {{positional: true}}}}}}
ptest:
  inputs:
    src: File
    dest: File
    owned: {{dtype: Directory, default: owned}}
  steps:
    upper:
      cab: upper
      params: {{infile: =recipe.src, outfile: =recipe.dest}}
    as-user:
      cab: upper
      backend: {{podman: {{user: "1234:1234"}}}}
      params: {{infile: =recipe.src, outfile: "{{recipe.owned}}/u.txt"}}
    fail:
      cab: shell
      tags: [never]
      params: {{script: 'echo line-1; echo line-2; exit 5'}}
    long:
      cab: shell
      tags: [never]
      params: {{script: 'echo started > started.txt; sleep 300'}}
"""

DAG_FILE = """
import os, pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.podman import StepcabPodmanOperator


def record_failure(context):
    workdir = context["dag_run"].conf["stepcab_workdir"]
    with open(os.path.join(workdir, "failure-" + context["ti"].task_id + ".txt"), "w") as f:
        f.write(str(context.get("exception")))


with DAG("stepcab_podman", schedule=None, start_date=pendulum.datetime(2024, 1, 1),
         default_args={{"on_failure_callback": record_failure}}) as dag:
    prev = None
    for label in ("upper", "as-user", "fail", "long"):
        t = StepcabPodmanOperator(task_id=label.replace("-", "_"), recipe_file={recipe!r}, recipe_name="ptest",
                                  step_path=[label])
        if prev is not None:
            prev >> t
        prev = t
"""


@pytest.fixture(scope="module")
def pdag(airflow_db, airflow_dags_folder, tmp_path_factory):
    ensure_test_image()
    base = tmp_path_factory.mktemp("podman")
    recipe = base / "podman.yml"
    recipe.write_text(RECIPE.format(settings=json.dumps(PODMAN_SETTINGS)))
    path = write_dag_file(airflow_dags_folder, "stepcab_podman_dag.py", DAG_FILE.format(recipe=str(recipe)))
    return load_dags(path)["stepcab_podman"]


@pytest.fixture
def tmp_path():
    """A world-traversable scratch dir (pytest's are 0700: the uid 1234 step could not reach them)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="stepcab-podman-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _inputs(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "words.txt").write_text("hello podman\n")
    (tmp_path / "out").mkdir()
    owned = tmp_path / "w" / "owned"
    owned.mkdir(parents=True)
    os.chown(owned, 1234, 1234)
    return {"src": str(tmp_path / "in" / "words.txt"), "dest": str(tmp_path / "out" / "sub" / "UP.txt")}


def test_steps_run_in_container_with_binds_and_ownership(pdag, tmp_path):
    conf = _inputs(tmp_path)
    run, states = run_dag(pdag, tmp_path / "w", conf)
    assert states == {"upper": "success", "as_user": "success", "fail": "skipped", "long": "skipped"}, (
        states, failure(tmp_path / "w", "upper"), failure(tmp_path / "w", "as_user"))
    out = tmp_path / "out" / "sub" / "UP.txt"
    assert out.read_text() == "HELLO PODMAN\n"
    # ran as the worker's uid, inside the run's working directory, owned by it on the host
    assert (tmp_path / "out" / "sub" / "UP.txt.uid").read_text().strip() == str(os.getuid())
    assert (tmp_path / "out" / "sub" / "UP.txt.pwd").read_text().strip() == str(tmp_path / "w")
    assert out.stat().st_uid == os.getuid()
    # a configured user: the output belongs to that uid on the host
    user_out = tmp_path / "w" / "owned" / "u.txt"
    assert user_out.read_text() == "HELLO PODMAN\n" and user_out.stat().st_uid == 1234
    assert not containers_named("stepcab-stepcab_podman-")  # --rm
    # the Step view's record: the cab's argv inside the podman command that ran it
    rec = xcom(run, "upper", "stepcab_step")
    assert rec["backend"] == "podman" and rec["command"][0].endswith("podman") and "run" in rec["command"]
    assert rec["argv"][:2] == ["sh", "-c"] and rec["command"][-len(rec["argv"]):] == rec["argv"]


def test_nonzero_exit_fails_the_task(pdag, tmp_path):
    conf = _inputs(tmp_path)
    run, states = run_dag(pdag, tmp_path / "w", {**conf, "select": ["fail"]})
    assert states["fail"] == "failed" and run.state == "failed", states
    text = failure(tmp_path / "w", "fail")
    assert "sh returns error code 5" in text and text.endswith("line-1\nline-2")


def test_killing_the_task_stops_the_container(pdag, tmp_path):
    conf = _inputs(tmp_path)
    work = tmp_path / "w"
    seen: dict = {}

    def kill_when_started() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (work / "started.txt").exists():
            time.sleep(0.1)
        seen["running"] = containers_named("stepcab-stepcab_podman-long-")
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        run, states = run_dag(pdag, work, {**conf, "select": ["long"]})
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join(timeout=5)
    assert seen.get("running"), "the container never ran"
    assert states["long"] == "failed", states
    assert time.monotonic() - started < 120
    deadline = time.monotonic() + 30
    while containers_named("stepcab-stepcab_podman-long-") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not containers_named("stepcab-stepcab_podman-long-"), "the container survived on_kill"
