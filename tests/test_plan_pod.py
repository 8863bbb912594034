"""plan/pod.py: the pod dict of a step (pure), validated through the kubernetes client's V1Pod."""

from __future__ import annotations

import pytest

from airflow_provider_stepcab.plan.argv import build_argv
from airflow_provider_stepcab.plan.pod import (
    CONTAINER_NAME, PodIdentity, PodPlanError, build_pod, dns_label, label_value, merge_fragment, parse_quantity,
    validate_pod,
)
from airflow_provider_stepcab.recipe.backends import parse_backend_options
from airflow_provider_stepcab.recipe.cab import build_cab
from airflow_provider_stepcab.recipe.errors import UNKNOWN_LOC, Problems
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text

CAB = """
command: wsclean
image: {registry: quay.io/stimela2, name: wsclean, version: cc0.2.1}
inputs:
  ms: {dtype: MS, required: true, policies: {positional: true}}
  size: {dtype: int, default: 1024}
  extra: {dtype: 'List[File]', policies: {repeat: list}}
  note: {dtype: str}
outputs:
  image: {dtype: File, nom_de_guerre: name}
"""

ID = PodIdentity(dag_id="cal_pipeline", task_id="cal__image", run_id="manual__2024-05-01T10:00:00+00:00",
                 step="cal.image_1", cab="wsclean", map_index=3)


def cab():
    problems = Problems()
    c = build_cab("wsclean", load_yaml_text(CAB, "cab.yml"), "cabs.wsclean", problems)
    assert not problems.errors
    return c


def kube(settings: dict):
    problems = Problems()
    opts = parse_backend_options({"kube": settings}, UNKNOWN_LOC, "backend", problems, True)
    assert not problems.errors, problems.errors
    return opts.kube


def plan(settings: dict, params: dict | None = None, **kw):
    c = cab()
    params = params if params is not None else {"ms": "obs.ms", "size": 2048, "image": "out/img"}
    kw.setdefault("workdir", "/data/runs/r1")
    return build_pod(cab=c, params=params, argv=build_argv(c, params), image="quay.io/stimela2/wsclean:cc0.2.1",
                     kube=kube(settings), identity=ID, **kw)


BASE = {"volumes": {"data": {"name": "pvc-data", "mount": "/data"}}}


def test_full_pod_exactly():
    settings = {
        **BASE, "namespace": "radio", "service_account": "runner", "always_pull_images": True,
        "env": {"OMP_NUM_THREADS": 4}, "user": {"uid": 1000, "gid": 100, "home": "/home/u"},
        "job_pod": {"type": "big", "memory": {"request": "8Gi", "limit": "16Gi"}, "cpu": {"request": "2", "limit": "4"},
                    "custom_pod_spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}],
                                        "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}},
        "predefined_pod_specs": {"big": {"nodeSelector": {"pool": "big"}, "tolerations": [{"key": "big"}]}},
    }
    p = plan(settings, env={"OMP_NUM_THREADS": "8", "X": "y"})
    pod = p.pod
    assert pod["metadata"] == {
        "name": "cal-image-1",
        "namespace": "radio",
        "labels": {"stepcab.io/dag": "cal_pipeline", "stepcab.io/task": "cal__image",
                   "stepcab.io/run": label_value(ID.run_id), "stepcab.io/step": "cal.image_1",
                   "stepcab.io/cab": "wsclean", "stepcab.io/map-index": "3"},
        "annotations": {"stepcab.io/dag-id": "cal_pipeline", "stepcab.io/task-id": "cal__image",
                        "stepcab.io/run-id": ID.run_id, "stepcab.io/step": "cal.image_1"}}
    assert pod["spec"] == {
        "containers": [{
            "name": CONTAINER_NAME, "image": "quay.io/stimela2/wsclean:cc0.2.1", "imagePullPolicy": "Always",
            "command": ["wsclean", "--size", "2048", "--name", "out/img", "obs.ms"],
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "runAsGroup": 100},
            "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi", "cpu": "4"},
                          "requests": {"memory": "8Gi", "cpu": "2"}},
            "env": [{"name": "OMP_NUM_THREADS", "value": "8"}, {"name": "X", "value": "y"},
                    {"name": "HOME", "value": "/home/u"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "workingDir": "/data/runs/r1"}],
        "restartPolicy": "Never", "serviceAccountName": "runner",
        "nodeSelector": {"pool": "big"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],  # lists replace (custom after predefined)
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "pvc-data"}}]}
    assert p.mounts == {"data": "/data"}
    v1 = validate_pod(pod)
    assert v1.spec.containers[0].resources.limits["memory"] == "16Gi"
    assert v1.spec.volumes[0].persistent_volume_claim.claim_name == "pvc-data"
    assert v1.spec.containers[0].security_context.run_as_user == 1000


def test_defaults_and_fallback_user():
    p = plan(BASE, fallback_uid=0, fallback_gid=0)
    ctr = p.container
    assert ctr["imagePullPolicy"] == "IfNotPresent"
    assert ctr["securityContext"] == {"runAsUser": 0, "runAsNonRoot": False, "runAsGroup": 0}
    assert "resources" not in ctr and "env" not in ctr
    assert p.pod["spec"]["serviceAccountName"] == "compute-runner"  # Stimela's default
    assert "namespace" not in p.pod["metadata"]  # the connection's namespace applies
    validate_pod(p.pod)


def test_command_is_a_list_never_a_shell_string():
    p = plan(BASE, {"ms": "my obs; rm -rf /.ms", "note": "$(whoami) && echo", "image": "out/img"})
    cmd = p.container["command"]
    assert cmd[-1] == "my obs; rm -rf /.ms" and "$(whoami) && echo" in cmd
    assert "args" not in p.container and cmd[0] == "wsclean"


def test_working_dir_only_when_mounted_or_set():
    assert "workingDir" not in plan(BASE, workdir="/elsewhere", params={"ms": "/data/x.ms"}).container
    assert plan({**BASE, "dir": "/data/w"}, workdir="/elsewhere").container["workingDir"] == "/data/w"


def test_file_params_must_be_under_a_mount():
    with pytest.raises(PodPlanError) as exc:
        plan(BASE, {"ms": "/scratch/obs.ms", "extra": ["/data/ok.fits", "/tmp/bad.fits"], "image": "img"},
             workdir="/data/runs/r1")
    text = str(exc.value)
    assert "parameter 'ms' = '/scratch/obs.ms' (/scratch/obs.ms) is not under a volume mount" in text
    assert "parameter 'extra' = '/tmp/bad.fits'" in text and "ok.fits" not in text
    assert "mounts: data at /data" in text
    # relative paths resolve against the working directory
    with pytest.raises(PodPlanError, match=r"'../../../etc/x.ms' \(/etc/x.ms\)"):
        plan(BASE, {"ms": "../../../etc/x.ms", "image": "img"})
    with pytest.raises(PodPlanError, match="mounts: none"):
        plan({}, {"ms": "/x.ms"})
    with pytest.raises(PodPlanError, match="relative and the pod has no working directory"):
        plan({}, {"ms": "x.ms"})


def test_errors_name_the_setting():
    with pytest.raises(PodPlanError, match=r"job_pod.type 'huge' not found in .*predefined_pod_specs \(big\)"):
        plan({**BASE, "job_pod": {"type": "huge"}, "predefined_pod_specs": {"big": {}}})
    with pytest.raises(PodPlanError, match=r"job_pod.memory: request 8Gi is larger than limit 4Gi"):
        plan({**BASE, "job_pod": {"memory": {"request": "8Gi", "limit": "4Gi"}}})
    with pytest.raises(PodPlanError, match=r"job_pod.cpu.limit: 'lots' is not a Kubernetes quantity"):
        plan({**BASE, "job_pod": {"cpu": {"limit": "lots"}}})
    with pytest.raises(PodPlanError, match=r"volumes.data: no mount path"):
        plan({"volumes": {"data": {"name": "x"}}})
    with pytest.raises(PodPlanError, match="slurm wrapper runs native or singularity steps only"):
        plan(BASE, slurm=True)
    with pytest.raises(PodPlanError, match="dask_cluster"):
        plan({**BASE, "dask_cluster": {"enable": True}})


def test_volume_warnings_for_provisioning_settings():
    p = plan({"volumes": {"data": {"name": "pvc", "mount": "/data", "capacity": "10Gi",
                                   "init_commands": ["mkdir x"]}}})
    assert p.warnings == ["backend.kube.volumes.data: PVC 'pvc' must already exist; stepcab provisions no volumes "
                          "and runs no init commands"]


def test_validate_pod_reports_unknown_fields():
    p = plan({**BASE, "job_pod": {"custom_pod_spec": {"nodeSelectr": {"a": "b"},
                                                        "containers": [{"resorces": {"limits": {}}}]}}})
    with pytest.raises(PodPlanError) as exc:
        validate_pod(p.pod)
    assert "spec.containers[0].resorces" in str(exc.value) and "spec.nodeSelectr" in str(exc.value)
    with pytest.raises(PodPlanError, match="invalid pod spec"):
        validate_pod({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"image": "x"}]}})


def test_labels_and_names():
    assert label_value("manual__2024-05-01T10:00:00+00:00") != label_value("manual__2024-05-01T10-00-00-00-00")
    for text in ("manual__2024-05-01T10:00:00+00:00", "x" * 80, "-leading", "ünïcode", ""):
        v = label_value(text)
        assert len(v) <= 63 and (v == "" or (v[0].isalnum() and v[-1].isalnum())), v
    assert label_value("fine_value-1.2") == "fine_value-1.2"
    assert dns_label("My_Recipe.Step__1") == "my-recipe-step-1"
    assert len(dns_label("a" * 100)) == 50


def test_merge_fragment_semantics():
    base = {"containers": [{"name": "step", "env": [{"name": "A"}]}], "x": {"a": 1, "b": [1]}}
    out = merge_fragment(base, {"containers": [{"env": [{"name": "B"}]}, {"name": "side"}], "x": {"b": [2], "c": 3}})
    assert out == {"containers": [{"name": "step", "env": [{"name": "B"}]}, {"name": "side"}],
                   "x": {"a": 1, "b": [2], "c": 3}}
    assert base["x"] == {"a": 1, "b": [1]}  # inputs untouched


def test_quantities():
    assert parse_quantity("500m", "q") == 0.5
    assert parse_quantity("2Gi", "q") == 2 * 2 ** 30
    assert parse_quantity("1e3", "q") == 1000
    assert parse_quantity("1.5G", "q") == 1.5e9
