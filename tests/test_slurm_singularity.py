"""Singularity inside Slurm over SSH (the TRamWAy case), against the real cluster.

What runs where:

* the Airflow side (``dag.test()``, root) plans the ``singularity exec`` argv and submits over SSH as
  the cluster user ``stepcab``;
* on the login node an SSH command runs ``remote_dependencies`` — which put the Apptainer
  **STAND-IN** (``tests/standins``, on the filesystem the cluster shares) on ``PATH`` — finds
  ``apptainer`` and, with ``build_local: true``, builds the image there;
* the batch script runs ``remote_dependencies`` again, makes the ``::EPHn::`` temporary directories
  with ``mktemp -d`` on the compute node and runs the singularity argv; the stand-in carries
  ``exec`` out with a real **rootless** ``podman run`` as ``stepcab`` (``--userns keep-id``: the
  container user is ``stepcab``, as with Apptainer), so a missing or wrong bind fails the step.

Rootless podman for ``stepcab`` needs ``newuidmap``/``newgidmap`` (Debian ``uidmap``, installed here
when missing) and the test image in ``stepcab``'s own storage (copied with ``podman save``/``load``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from container_helpers import IMAGE, STANDINS, ensure_test_image, podman, skip_or_fail
from slurm_cluster import slurm_cluster  # noqa: F401
from test_native_operator import failure, load_dags, run_dag, write_dag_file, xcom

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SING_IMAGE = "quay.io/stimela2/stepcab-test:cc0.2.1"
SIMG_NAME = "quay.io-stimela2-stepcab-test:cc0.2.1.simg"
#: rootless podman of the cluster user, as it works on these machines
REMOTE_PODMAN = "--runtime runc --cgroup-manager cgroupfs --events-backend none"
REMOTE_RUN = "--userns keep-id --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096"

RECIPE = """
opts:
  backend:
    select: singularity,native
    singularity:
      image_dir: {image_dir}
      env: {{GREETING: hello}}
    slurm:
      enable: true
      ssh_conn_id: stepcab_cluster
      remote_dir: stepcab-jobs
      poll_interval: 1
      exit_grace: 20
      build_local: true
      srun_opts: {{mem: 200M, cpus-per-task: 1, time: "0:05:00"}}
      remote_dependencies:
        - 'echo "deps ran on $(hostname) in $PWD"'
        - 'export PATH={standins}:$PATH'
        - 'export STEPCAB_STANDIN_PODMAN_OPTS="{podman_opts}"'
        - 'export STEPCAB_STANDIN_RUN_OPTS="{run_opts}"'
        - 'export STEPCAB_STANDIN_LOG=$PWD/standin.jsonl'
cabs:
  upper:
    image: {{_use: vars.img, name: stepcab-test}}
    command: >-
      sh -c 'echo "in container as $(id -u) GREETING=$GREETING"; echo scratch > /tmp/scratch &&
      cat /tmp/scratch && tr a-z A-Z < "$0" > "$1"'
    inputs: {{infile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
    outputs: {{outfile: {{dtype: File, required: true, policies: {{positional: true}}}}}}
  shell:
    image: {{_use: vars.img, name: stepcab-test}}
    command: sh -c
    inputs: {{script: {{dtype: str, required: true, policies: {{positional: true}}}}}}
vars:
  img: {{registry: quay.io/stimela2, version: cc0.2.1}}
slurm_sing:
  inputs:
    src: File
    dest: File
  steps:
    upper:
      cab: upper
      params: {{infile: =recipe.src, outfile: =recipe.dest}}
    jobbuild:
      cab: shell
      tags: [never]
      backend: {{slurm: {{build_local: false}}, singularity: {{image_dir: {image_dir2}}}}}
      params: {{script: 'echo built-in-job-ran'}}
    readonly:
      cab: shell
      tags: [never]
      backend: {{singularity: {{bind_dirs: {{data: {{host: {data}, target: /data, mode: ro}}}}}}}}
      params: {{script: 'cat /data/seen.txt && echo x > /data/written.txt'}}
    gone:
      cab: shell
      tags: [never]
      backend: {{singularity: {{bind_dirs: {{gone: {{host: /nonexistent/stepcab-dir}}}}}}}}
      params: {{script: 'true'}}
"""

DAG_FILE = """
import os, pendulum
from airflow.sdk import DAG
from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator


def record_failure(context):
    workdir = context["dag_run"].conf["stepcab_workdir"]
    with open(os.path.join(workdir, "failure-" + context["ti"].task_id + ".txt"), "w") as f:
        f.write(str(context.get("exception")))


with DAG("stepcab_slurm_sing", schedule=None, start_date=pendulum.datetime(2024, 1, 1),
         default_args={{"on_failure_callback": record_failure}}) as dag:
    for label in ("upper", "jobbuild", "readonly", "gone"):   # independent: one failing doesn't stop another
        StepcabSlurmOperator(task_id=label, recipe_file={recipe!r}, recipe_name="slurm_sing", step_path=[label])
"""


def shared_dir(cluster, name: str) -> Path:
    """A directory on the shared filesystem that root (the worker) and the cluster user can write."""
    path = Path(cluster.work_dir) / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    path.chmod(0o1777)
    return path


def remote(cluster, command: str, timeout: float = 300) -> tuple:
    from airflow_provider_stepcab.hooks.slurm import SlurmHook

    hook = SlurmHook(cluster.conn_id)
    try:
        return hook.run(f"bash -c {shlex.quote(command)}", check=False, timeout=timeout)
    finally:
        hook.close()


def ensure_remote_podman(cluster) -> None:
    """The test image in the cluster user's rootless podman storage, or skip saying why."""
    ensure_test_image()
    if not shutil.which("newuidmap"):
        out = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "uidmap"],
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if out.returncode != 0 or not shutil.which("newuidmap"):
            skip_or_fail(f"rootless podman for the cluster user needs newuidmap (uidmap): {out.stderr[-300:]}")
    tar_dir = Path(cluster.work_dir) / ".stepcab-test-images"
    tar_dir.mkdir(exist_ok=True)
    tar_dir.chmod(0o755)
    tar = tar_dir / "stepcab-test.tar"
    if not tar.exists():
        podman("save", "-o", str(tar), IMAGE)
        tar.chmod(0o644)
    p = f"podman {REMOTE_PODMAN}"
    rc, out, err = remote(cluster, f"""
        {p} image exists {SING_IMAGE} || {{ {p} load -q -i {tar} && {p} tag {IMAGE} {SING_IMAGE}; }} || exit 3
        {p} run --rm {REMOTE_RUN} {SING_IMAGE} sh -c 'test "$(id -u)" = {_uid(cluster.user)}'""")
    if rc != 0:
        skip_or_fail(f"rootless podman as {cluster.user} does not work here (exit {rc}): {(out + err)[-500:]}")


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


@pytest.fixture(scope="module")
def sing(slurm_cluster, airflow_db, airflow_dags_folder):  # noqa: F811
    ensure_remote_podman(slurm_cluster)
    base = shared_dir(slurm_cluster, "slurm-sing")
    (base / "data").mkdir()
    (base / "data" / "seen.txt").write_text("visible through the ro bind\n")
    for sub in ("images", "images2"):
        (base / sub).mkdir()
        (base / sub).chmod(0o1777)
    recipe = base / "slurm_sing.yml"
    recipe.write_text(RECIPE.format(image_dir=base / "images", image_dir2=base / "images2", data=base / "data",
                                    standins=STANDINS, podman_opts=REMOTE_PODMAN, run_opts=REMOTE_RUN))
    path = write_dag_file(airflow_dags_folder, "stepcab_slurm_sing_dag.py", DAG_FILE.format(recipe=str(recipe)))
    return load_dags(path)["stepcab_slurm_sing"], base


def _inputs(cluster):
    d = shared_dir(cluster, "sing-in")
    (d / "in").mkdir()
    (d / "in" / "w.txt").write_text("through a bind on the compute node\n")
    (d / "out").mkdir()
    (d / "out").chmod(0o1777)
    return d, {"src": str(d / "in" / "w.txt"), "dest": str(d / "out" / "W.txt")}


def _calls(work: Path) -> list:
    log = work / "standin.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_job_runs_singularity_argv_after_dependencies(sing, slurm_cluster, capfd):  # noqa: F811
    dag, base = sing
    d, params = _inputs(slurm_cluster)
    work = shared_dir(slurm_cluster, "sing-ok")
    run, states = run_dag(dag, work, params)
    out = "".join(capfd.readouterr())
    assert states["upper"] == "success", (states, failure(work, "upper"), out[-3000:])
    assert (d / "out" / "W.txt").read_text() == "THROUGH A BIND ON THE COMPUTE NODE\n"
    assert (d / "out" / "W.txt").stat().st_uid == _uid(slurm_cluster.user)   # the container ran as stepcab
    assert xcom(run, "upper") == {"outfile": params["dest"]}

    job = xcom(run, "upper", "slurm_job")
    script = Path(job["job_dir"], "job.sbatch").read_text()
    lines = script.splitlines()
    deps = lines.index(f"export PATH={STANDINS}:$PATH")
    argv_line = next(i for i, line in enumerate(lines) if line.startswith("_sc_argv=(apptainer exec "))
    assert deps < argv_line < lines.index('setsid "${_sc_argv[@]}" &')
    assert "--bind ::EPH0:::/tmp:rw" in lines[argv_line] and "mktemp -d -p /tmp" in script
    assert f"{base}/images/{SIMG_NAME}" in lines[argv_line]

    # remote_dependencies ran first, in the job's shell; the container's output follows
    stdout = Path(job["job_dir"], "stdout.log").read_text()
    assert stdout.index("deps ran on") < stdout.index("in container as") < stdout.index("scratch")
    assert f"in container as {_uid(slurm_cluster.user)} GREETING=hello" in stdout
    assert "in container as" in out                                     # streamed into the task log

    # built on the login node (build_local: true) before sbatch; exec with a real temporary /tmp
    assert "[login node] stepcab: building singularity image" in out
    assert (base / "images" / SIMG_NAME).exists()
    calls = _calls(work)
    assert [c[1] for c in calls] == ["build", "exec"], calls
    assert calls[0][2:] == [f"{base}/images/{SIMG_NAME}.stepcab-build." + calls[0][2].rsplit(".", 1)[1],
                            f"docker://{SING_IMAGE}"]
    exec_argv = calls[1]
    assert exec_argv[:5] == ["apptainer", "exec", "--pwd", str(work), "--contain"]
    assert f"{d}/in:{d}/in:ro" in exec_argv and f"{d}/out:{d}/out:rw" in exec_argv
    tmp_bind = next(a for a in exec_argv if a.endswith(":/tmp:rw"))
    assert tmp_bind.startswith("/tmp/stepcab-eph.") and "::EPH" not in " ".join(exec_argv)
    assert not Path(tmp_bind.split(":")[0]).exists()                   # clean_tmp: removed at the end


def test_image_built_in_the_job_without_build_local(sing, slurm_cluster, capfd):  # noqa: F811
    dag, base = sing
    work = shared_dir(slurm_cluster, "sing-jobbuild")
    run, states = run_dag(dag, work, {**_inputs(slurm_cluster)[1], "select": ["jobbuild"]})
    out = "".join(capfd.readouterr())
    assert states["jobbuild"] == "success", (states, failure(work, "jobbuild"), out[-3000:])
    assert "[login node] stepcab: building" not in out
    stdout = Path(xcom(run, "jobbuild", "slurm_job")["job_dir"], "stdout.log").read_text()
    assert stdout.index("deps ran on") < stdout.index("stepcab: building singularity image") \
        < stdout.index("built-in-job-ran")
    assert (base / "images2" / SIMG_NAME).exists()
    assert [c[1] for c in _calls(work)] == ["build", "exec"]


def test_wrong_bind_fails_the_step(sing, slurm_cluster, capfd):  # noqa: F811
    dag, base = sing
    work = shared_dir(slurm_cluster, "sing-ro")
    run, states = run_dag(dag, work, {**_inputs(slurm_cluster)[1], "select": ["readonly", "gone"]})
    capfd.readouterr()
    assert states["readonly"] == "failed", states
    why = failure(work, "readonly")
    assert "visible through the ro bind" in why and "Read-only file system" in why, why
    assert not (base / "data" / "written.txt").exists()
    exec_argv = _calls(work)[-1]
    assert f"{base}/data:/data:ro" in exec_argv
    # a bind source missing on the shared filesystem fails before anything is submitted
    assert states["gone"] == "failed" and run.state == "failed", states
    assert "/nonexistent/stepcab-dir' does not exist" in failure(work, "gone")
    assert xcom(run, "gone", "slurm_job") is None


# ------------------------------------------------------------------ the scripts alone (local bash, no cluster)

def test_job_script_makes_substitutes_and_removes_ephemeral_dirs(tmp_path):
    from airflow_provider_stepcab.plan.sbatch import SlurmJobSpec, build_sbatch_script

    store = tmp_path / "odd & store"
    store.mkdir()
    spec = SlurmJobSpec(job_name="t", job_dir=str(tmp_path / "job"), setup=["echo setup-ran"],
                        argv=["sh", "-c", 'echo "$0|$1"; touch "$0/f"', "::EPH0::", "x::EPH1::y"],
                        ephemeral={"EPH0": str(store), "EPH1": str(store)})
    (tmp_path / "job.sh").write_text(build_sbatch_script(spec))
    res = subprocess.run(["bash", str(tmp_path / "job.sh")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    first, eph0, eph1 = res.stdout.splitlines()[1], *res.stdout.splitlines()[1].split("|")
    assert res.stdout.startswith("setup-ran\n") and eph0.startswith(f"{store}/stepcab-eph.")
    assert eph1.startswith(f"x{store}/stepcab-eph.") and eph1.endswith("y") and eph1[1:-1] != eph0, first
    assert list(store.iterdir()) == []                                    # removed when the job ended


def test_prepare_script_finds_executable_and_builds_once(tmp_path):
    from airflow_provider_stepcab.plan.slurm import ImageCheck, parse_prepare_output, singularity_prepare_script

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "singularity"
    fake.write_text('#!/bin/sh\necho "$@" >> "$BUILD_LOG"; [ "$1" = build ] && echo img > "$2"\n')
    fake.chmod(0o755)
    simg = tmp_path / "imgs" / "a.simg"
    script = singularity_prepare_script([f"export PATH={bin_dir}:$PATH", f"export BUILD_LOG={tmp_path}/log"],
                                        image=ImageCheck(str(simg), "docker://x/y:1"), workdir=str(tmp_path))
    env = {"PATH": "/usr/bin:/bin"}
    for _ in range(2):
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env)
        assert res.returncode == 0 and parse_prepare_output(res.stdout) == "singularity", res
    assert simg.read_text() == "img\n" and len((tmp_path / "log").read_text().splitlines()) == 1
    missing = singularity_prepare_script([], image=None)
    res = subprocess.run(["bash", "-c", missing], capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 127 and "apptainer or singularity not found" in res.stderr
    off = singularity_prepare_script([f"export PATH={bin_dir}:$PATH"],
                                     image=ImageCheck(str(tmp_path / "b.simg"), "docker://x/y:1", auto_build=False))
    res = subprocess.run(["bash", "-c", off], capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 1 and "auto_build is off" in res.stderr
