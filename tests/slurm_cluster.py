"""Pytest fixture: the project's real single-node Slurm cluster, reached over SSH.

``scripts/cluster/cluster.sh up`` installs (apt) and starts munge, MariaDB +
slurmdbd, slurmctld, slurmd and sshd on 127.0.0.1; teardown stops them. Tests
get an Airflow SSH connection id (``AIRFLOW_CONN_STEPCAB_CLUSTER``) and talk to
the cluster only through the ssh provider's hooks.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cluster" / "cluster.sh"
CONN_ID = "stepcab_cluster"


@dataclass
class Cluster:
    conn_id: str
    state_dir: Path
    work_dir: Path
    user: str


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.fail("the Slurm cluster fixture needs root (apt-get, daemons)")
    state = Path(os.environ.get("STEPCAB_CLUSTER_DIR", "/var/tmp/stepcab-cluster"))
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"cluster did not come up:\n{up.stdout}\n{up.stderr}"
    conn = subprocess.run(["bash", str(SCRIPT), "conn"], capture_output=True, text=True, check=True)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = conn.stdout.strip()
    try:
        yield Cluster(CONN_ID, state, state / "work", os.environ.get("STEPCAB_CLUSTER_USER", "stepcab"))
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)
