"""StepcabKubernetesOperator through real Airflow (``dag.test()``) against the fake cluster.

The fake (``tests/kube_fake``) serves the pods API on 127.0.0.1 and runs every pod's container
with the local podman, so exit codes, OOM kills, logs and timings are real. The operator reaches
it through an Airflow ``kubernetes`` connection (``AIRFLOW_CONN_KUBE_FAKE``) holding a kubeconfig
path, with the real kubernetes (sync) and kubernetes_asyncio (trigger) clients. The claim
``stepcab-data`` is a host directory mounted at the same path in the pod, and each run's working
directory lies inside it (a shared filesystem, as Stimela assumes).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from test_native_operator import load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

RECIPE = """
opts:
  backend:
    select: kube
    kube:
      namespace: stepcab-test
      service_account: default
      provisioning_timeout: 60
      env: {{FROM_KUBE_ENV: kube-env}}
      volumes:
        data: {{name: stepcab-data, mount: "{data}"}}
      predefined_pod_specs:
        gpu-node: {{nodeSelector: {{accelerator: nvidia-a100}}}}
cabs:
  shell:
    image: {{registry: localhost, name: stepcab-test, version: latest}}
    command: sh -c
    inputs:
      script: {{dtype: str, required: true, policies: {{positional: true}}}}
      infile: {{dtype: File, policies: {{skip: true}}}}
    outputs:
      answer: {{dtype: int}}
      outfile: {{dtype: File, must_exist: false, policies: {{skip: true}}}}
    management:
      environment: {{FROM_CAB: "cab-{{recipe.flavour}}"}}
      wranglers:
        '^ANSWER=(?P<answer>\\d+)': PARSE_OUTPUT:answer:int
        'OOPS': ERROR
        'SECRET': SUPPRESS
kube:
  inputs:
    flavour: {{dtype: str, default: vanilla}}
  steps:
    hello:
      cab: shell
      params:
        script: 'echo "hello from $(pwd) uid=$(id -u) env=$FROM_KUBE_ENV/$FROM_CAB"; echo SECRET; echo ANSWER=42; echo out > out.txt'
        outfile: out.txt
    fail:
      cab: shell
      tags: [never]
      params: {{script: 'for i in 1 2 3; do echo line-$i; done; exit 7'}}
    oops:
      cab: shell
      tags: [never]
      params: {{script: 'echo fine; echo OOPS here; exit 0'}}
    oom:
      cab: shell
      tags: [never]
      backend: {{kube: {{job_pod: {{memory: {{request: 16Mi, limit: 24Mi}}, cpu: {{request: 100m, limit: "1"}}}}}}}}
      params: {{script: 'echo eating; x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo survived'}}
    pending:
      cab: shell
      tags: [never]
      backend: {{kube: {{provisioning_timeout: 3, job_pod: {{type: gpu-node}}}}}}
      params: {{script: 'echo never runs'}}
    badimage:
      cab: shell
      tags: [never]
      backend: {{override_registries: {{localhost: nowhere.invalid}}}}
      params: {{script: 'echo never runs'}}
    slow:
      cab: shell
      tags: [never]
      params: {{script: 'echo started; sleep 120; echo finished'}}
    outside:
      cab: shell
      tags: [never]
      params: {{script: 'cat /etc/hostname', infile: /etc/hostname}}
    chatty:
      cab: shell
      tags: [never]
      params: {{script: 'echo ANSWER=7; for i in 1 2 3 4; do echo tick-$i; sleep 1; done'}}
    oomretry:
      cab: shell
      tags: [never]
      backend: {{kube: {{job_pod: {{memory: {{request: 16Mi, limit: 24Mi}}}}, retry_resources: {{mem: {{factor: 2, max: 1Gi}}}}}}}}
      params: {{script: 'echo eating; x=$(head -c 16000000 /dev/zero | tr "\\0" a); echo survived'}}
    flaky:
      cab: shell
      tags: [never]
      backend: {{kube: {{job_pod: {{memory: {{request: 16Mi, limit: 24Mi}}}}, retry_resources: {{mem: {{factor: 2}}}}}}}}
      params: {{script: 'if [ -e flaked ]; then echo second-time-lucky; else touch flaked; exit 3; fi'}}
    slurmy:
      cab: shell
      tags: [never]
      backend: {{slurm: {{enable: true}}}}
      params: {{script: 'echo no'}}
"""

DAG_FILE = """
import datetime, os, pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.kube import StepcabKubernetesOperator


def record_failure(context):
    workdir = context["dag_run"].conf["stepcab_workdir"]
    with open(os.path.join(workdir, "failure-" + context["ti"].task_id + ".txt"), "w") as f:
        f.write(str(context.get("exception")))


RECIPE = {recipe!r}
STEPS = ("hello", "fail", "oops", "oom", "pending", "badimage", "slow", "outside", "slurmy")
for mode in ("defer", "sync", "stream"):
    with DAG("stepcab_kube_" + mode, schedule=None, start_date=pendulum.datetime(2024, 1, 1),
             default_args={{"on_failure_callback": record_failure}}) as dag:
        for label in (STEPS if mode != "stream" else ("chatty",)):
            StepcabKubernetesOperator(task_id=label, recipe_file=RECIPE, recipe_name="kube", step_path=[label],
                                      kubernetes_conn_id="kube_fake", deferrable=(mode != "sync"),
                                      poll_interval=0.5, startup_check_interval_seconds=1,
                                      logging_interval=1 if mode == "stream" else None)
    globals()["dag_" + mode] = dag

with DAG("stepcab_kube_retry", schedule=None, start_date=pendulum.datetime(2024, 1, 1),
         default_args={{"retries": 1, "retry_delay": datetime.timedelta(seconds=1)}}) as dag_retry:
    for label in ("oomretry", "flaky"):
        StepcabKubernetesOperator(task_id=label, recipe_file=RECIPE, recipe_name="kube", step_path=[label],
                                  kubernetes_conn_id="kube_fake", poll_interval=0.5, startup_check_interval_seconds=1)
"""


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    from kube_fake import KubeFake, available, ensure_image

    why = available()
    if why:
        pytest.skip(why)
    ensure_image()
    data = tmp_path_factory.mktemp("pvc-data")
    fake = KubeFake(claims={"stepcab-data": str(data)}, namespace="default").start()
    old = {k: os.environ.get(k) for k in fake.env()}
    os.environ.update(fake.env())
    try:
        yield fake, data
    finally:
        fake.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def dags(kube, airflow_db, airflow_dags_folder, tmp_path_factory):
    _fake, data = kube
    base = tmp_path_factory.mktemp("kube-recipe")
    recipe = base / "kube.yml"
    recipe.write_text(RECIPE.format(data=str(data)))
    path = write_dag_file(airflow_dags_folder, "stepcab_kube_dags.py", DAG_FILE.format(recipe=str(recipe)))
    return load_dags(path)


def _run(dags, kube, mode: str, name: str, conf: dict | None = None):
    fake, data = kube
    work = data / f"{mode}-{name}"
    before = len(fake.cluster.created)
    run, states = run_dag(dags[f"stepcab_kube_{mode}"], work, conf)
    return run, states, work, fake.cluster.created[before:]


def failure(work: Path, task: str) -> str:
    path = work / f"failure-{task}.txt"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("mode", ["defer", "sync"])
def test_success_outputs_and_planned_pod(dags, kube, mode):
    fake, data = kube
    run, states, work, created = _run(dags, kube, mode, "hello", {"flavour": "mint"})
    assert states["hello"] == "success", failure(work, "hello")
    assert xcom(run, "hello") == {"answer": 42, "outfile": "out.txt"}
    assert (work / "out.txt").read_text() == "out\n"  # written by the pod onto the claim
    assert len(created) == 1
    pod = created[0]
    spec, ctr = pod["spec"], pod["spec"]["containers"][0]
    assert ctr["name"] == "step" and ctr["image"] == "localhost/stepcab-test:latest"
    assert ctr["command"][:2] == ["sh", "-c"] and ctr["command"][2].startswith('echo "hello')
    assert ctr["workingDir"] == str(work)
    assert ctr["volumeMounts"] == [{"name": "data", "mountPath": str(data)}]
    assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "stepcab-data"}}]
    assert {"name": "FROM_CAB", "value": "cab-mint"} in ctr["env"]
    assert ctr["securityContext"]["runAsUser"] == os.getuid()
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "default"
    labels = pod["metadata"]["labels"]
    assert labels["stepcab.io/dag"] == f"stepcab_kube_{mode}" and labels["stepcab.io/step"] == "kube.hello"
    assert labels["dag_id"] == f"stepcab_kube_{mode}" and labels["task_id"] == "hello"  # the KPO's own
    assert pod["metadata"]["namespace"] == "stepcab-test"
    # the pod was deleted afterwards (on_finish_action=delete_pod)
    assert fake.calls("DELETE", pod["metadata"]["name"])
    assert not fake.cluster.pods
    # the Step view's record: the command the pod ran, its spec, name and last phase
    rec = xcom(run, "hello", "stepcab_step")
    assert rec["argv"] == ctr["command"] and rec["pod"]["spec"]["containers"][0]["command"] == ctr["command"]
    assert rec["pod_name"] == pod["metadata"]["name"] and rec["pod_phase"] == "Succeeded"


@pytest.mark.parametrize("mode", ["defer", "sync"])
def test_exit_code_in_error(dags, kube, mode):
    run, states, work, _ = _run(dags, kube, mode, "fail", {"select": ["fail"]})
    assert states["fail"] == "failed", states
    text = failure(work, "fail")
    assert "step kube.fail failed: container exited with exit code 7 (Error)" in text
    assert text.endswith("--- last output lines ---\nline-1\nline-2\nline-3")


def test_error_wrangler_fails_exit_zero(dags, kube):
    run, states, work, _ = _run(dags, kube, "defer", "oops", {"select": ["oops"]})
    assert states["oops"] == "failed"
    assert "declaring 'sh' as failed based on its output" in failure(work, "oops")


@pytest.mark.parametrize("mode", ["defer", "sync"])
def test_oom_killed(dags, kube, mode):
    run, states, work, created = _run(dags, kube, mode, "oom", {"select": ["oom"]})
    assert states["oom"] == "failed"
    assert "container OOMKilled (out of memory; exit code 137)" in failure(work, "oom")
    assert created[0]["spec"]["containers"][0]["resources"] == {
        "requests": {"memory": "16Mi", "cpu": "100m"}, "limits": {"memory": "24Mi", "cpu": "1"}}


@pytest.mark.parametrize("mode", ["defer", "sync"])
def test_pending_too_long(dags, kube, mode):
    fake, _data = kube
    run, states, work, created = _run(dags, kube, mode, "pending", {"select": ["pending"]})
    assert states["pending"] == "failed"
    text = failure(work, "pending")
    assert "pod unschedulable: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector" in text
    assert "pod did not start within 3s (pending timeout" in text
    assert created[0]["spec"]["nodeSelector"] == {"accelerator": "nvidia-a100"}  # predefined_pod_specs
    name = created[0]["metadata"]["name"]
    created_at = fake.calls("POST", "/pods")[-1][3]
    deleted_at = fake.calls("DELETE", name)[0][3]
    assert deleted_at - created_at < 45  # given up after ~3 s (+ polling), not the recipe's 60 s


@pytest.mark.parametrize("mode", ["defer", "sync"])
def test_image_pull_backoff(dags, kube, mode):
    run, states, work, created = _run(dags, kube, mode, "badimage", {"select": ["badimage"]})
    assert states["badimage"] == "failed"
    assert created[0]["spec"]["containers"][0]["image"] == "nowhere.invalid/stepcab-test:latest"
    text = failure(work, "badimage")
    # the sync KPO gives up at the first ErrImagePull, the trigger may see the back-off already
    assert "image cannot be pulled (ErrImagePull): Failed to pull image" in text or \
        'image cannot be pulled (ImagePullBackOff): Back-off pulling image "nowhere.invalid' in text, text


def test_oom_killed_pod_is_retried_with_doubled_memory(dags, kube, capfd):
    """Try 1 (limit 24Mi) is OOMKilled; Airflow's retry asks for 48Mi (the recipe's factor 2) and
    succeeds. A failure of another kind (``flaky``: exit 3, then fine) retries with the same request."""
    run, states, work, created = _run(dags, kube, "retry", "retry", {"select": ["oomretry", "flaky"]})
    out = capfd.readouterr().out
    assert states == {"oomretry": "success", "flaky": "success"}, (states, failure(work, "oomretry"))
    by_task = {}
    for pod in created:
        by_task.setdefault(pod["metadata"]["labels"]["task_id"], []).append(pod["spec"]["containers"][0]["resources"])
    assert by_task["oomretry"] == [{"requests": {"memory": "16Mi"}, "limits": {"memory": "24Mi"}},
                                   {"requests": {"memory": "32Mi"}, "limits": {"memory": "48Mi"}}]
    assert by_task["flaky"] == [{"requests": {"memory": "16Mi"}, "limits": {"memory": "24Mi"}}] * 2
    why = "1 earlier OUT_OF_MEMORY/OOMKilled try; rule factor 2, max 1Gi"
    assert f"retry with more resources: mem 24Mi -> 48Mi ({why})" in out
    rec = xcom(run, "oomretry", "stepcab_resources")
    assert rec["source"] == "kube" and rec["state"] == "COMPLETED" and rec["attempt"] == 2
    assert rec["escalated"] == {"mem": {"from": "24Mi", "to": "48Mi", "why": why}}
    assert rec["req_mem_bytes"] == 48 << 20 and rec["elapsed_s"] is not None
    assert "Raised for this try: mem 24Mi -> 48Mi" in out
    flaky = xcom(run, "flaky", "stepcab_resources")
    assert flaky["state"] == "COMPLETED" and flaky["attempt"] == 2 and flaky["escalated"] == {}


def test_file_param_outside_mounts_fails_before_any_pod(dags, kube):
    fake, data = kube
    run, states, work, created = _run(dags, kube, "sync", "outside", {"select": ["outside"]})
    assert states["outside"] == "failed" and created == []
    text = failure(work, "outside")
    assert "parameter 'infile' = '/etc/hostname' (/etc/hostname) is not under a volume mount" in text
    assert f"mounts: data at {data}" in text


def test_kube_with_slurm_is_an_error(dags, kube):
    run, states, work, created = _run(dags, kube, "sync", "slurmy", {"select": ["slurmy"]})
    assert states["slurmy"] == "failed" and created == []
    assert "slurm wrapper runs native or singularity steps only" in failure(work, "slurmy")


def test_on_kill_deletes_the_pod(dags, kube):
    fake, data = kube
    seen: dict = {}

    def kill_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [r for r in list(fake.cluster.pods.values()) if r.body["status"].get("phase") == "Running"]
            if running:
                seen["pod"] = running[0].name
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        run, states, work, created = _run(dags, kube, "sync", "slow", {"select": ["slow"]})
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join(timeout=5)
    assert seen.get("pod"), "the pod never ran"
    assert states["slow"] == "failed"
    assert time.monotonic() - started < 100
    assert fake.calls("DELETE", seen["pod"])
    assert seen["pod"] not in {r.name for r in fake.cluster.pods.values()}


def test_deferred_with_logging_interval_still_wrangles_every_line(dags, kube):
    """With ``logging_interval`` the trigger shows lines while the pod runs (``sinceSeconds`` reads);
    on resume the wranglers still see the whole log (ANSWER came before the trigger's reads)."""
    fake, _data = kube
    before = len(fake.cluster.requests)
    run, states, work, created = _run(dags, kube, "stream", "chatty", {"select": ["chatty"]})
    assert states["chatty"] == "success", failure(work, "chatty")
    assert xcom(run, "chatty") == {"answer": 7}
    log_reads = [r for r in fake.cluster.requests[before:] if r[1].endswith("/log")]
    assert any("sinceSeconds" in r[2] for r in log_reads), log_reads
    assert any(r[2].get("follow", "").lower() != "true" for r in log_reads)  # the trigger's reads


def test_diagnose_pure():
    from kubernetes.client import (V1ContainerState, V1ContainerStateTerminated, V1ContainerStateWaiting,
                                   V1ContainerStatus, V1Pod, V1PodCondition, V1PodStatus)

    from airflow_provider_stepcab.operators.kube import diagnose

    def pod(state=None, conditions=None):
        statuses = [V1ContainerStatus(name="step", image="x", image_id="", ready=False, restart_count=0,
                                      state=state)] if state else None
        return V1Pod(status=V1PodStatus(phase="Pending", container_statuses=statuses, conditions=conditions))

    oom = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=137, reason="OOMKilled"))
    assert diagnose(pod(oom), None, None) == (137, [
        "container OOMKilled (out of memory; exit code 137) — raise backend.kube.job_pod.memory.limit"])
    pull = V1ContainerState(waiting=V1ContainerStateWaiting(reason="ImagePullBackOff", message="Back-off"))
    assert diagnose(pod(pull), None, None) == (None, ["image cannot be pulled (ImagePullBackOff): Back-off"])
    unsched = [V1PodCondition(type="PodScheduled", status="False", message="0/1 nodes")]
    code, why = diagnose(pod(conditions=unsched), None, {"status": "timeout"}, startup_timeout=5)
    assert code is None and why == ["pod unschedulable: 0/1 nodes",
                                    "pod did not start within 5s (pending timeout; backend.kube.provisioning_timeout)"]
    assert diagnose(None, RuntimeError("boom\nmore"), None) == (None, ["boom", "pod not found (deleted?)"])
