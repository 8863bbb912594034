"""Pytest fixture: the project's real single-node Slurm cluster, reached over SSH.

``scripts/cluster/cluster.sh up`` installs (apt) and starts munge, MariaDB +
slurmdbd, slurmctld, slurmd and sshd on 127.0.0.1. Tests get an Airflow SSH
connection id (``AIRFLOW_CONN_STEPCAB_CLUSTER``) and talk to the cluster only
through the ssh provider's hooks.

The fixture leaves the cluster as it found it: when ``cluster.sh status`` shows every
daemon running at session start (another session or a developer brought it up — sessions
share it), it is used as is and **not** stopped at teardown; otherwise the fixture brings it
up and takes it down again.
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
#: the daemons ``cluster.sh status`` reports; slurmdbd/MariaDB only when accounting is on
DAEMONS = ("munged", "slurmctld", "slurmd", "sshd")
DBD_DAEMONS = ("mariadbd", "slurmdbd")


@dataclass
class Cluster:
    conn_id: str
    state_dir: Path
    work_dir: Path
    user: str
    #: True when this session started the cluster (and stops it at teardown)
    owned: bool = True


def expected_daemons() -> tuple:
    with_dbd = os.environ.get("STEPCAB_WITH_SLURMDBD", "1") == "1"
    return DAEMONS + (DBD_DAEMONS if with_dbd else ())


def parse_status(text: str) -> dict:
    """``cluster.sh status`` output (``<daemon> running|stopped`` lines) → ``{daemon: running?}``."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] in ("running", "stopped"):
            states[parts[0]] = parts[1] == "running"
    return states


def fully_running() -> bool:
    """Whether every daemon the test cluster needs is already running."""
    try:
        out = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    states = parse_status(out.stdout)
    return out.returncode == 0 and all(states.get(d) for d in expected_daemons())


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.fail("the Slurm cluster fixture needs root (apt-get, daemons)")
    state = Path(os.environ.get("STEPCAB_CLUSTER_DIR", "/var/tmp/stepcab-cluster"))
    owned = not fully_running()
    if owned:
        up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, f"cluster did not come up:\n{up.stdout}\n{up.stderr}"
    conn = subprocess.run(["bash", str(SCRIPT), "conn"], capture_output=True, text=True, check=True)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = conn.stdout.strip()
    try:
        yield Cluster(CONN_ID, state, state / "work", os.environ.get("STEPCAB_CLUSTER_USER", "stepcab"), owned)
    finally:
        if owned:
            subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)
