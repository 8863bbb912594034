"""Shared by the container tests: the local podman test image and its settings.

``scripts/podman-test-image.sh`` builds ``localhost/stepcab-test:latest`` (busybox, offline) in a
private podman storage; tests are skipped when podman cannot be installed/used here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path


from needs import missing

REPO = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "standins"
IMAGE = "localhost/stepcab-test:latest"
ROOT = os.environ.get("STEPCAB_PODMAN_ROOT", "/var/tmp/stepcab-podman/root")
RUNROOT = os.environ.get("STEPCAB_PODMAN_RUNROOT", "/var/tmp/stepcab-podman/runroot")
GLOBAL = ["--root", ROOT, "--runroot", RUNROOT, "--runtime", "runc", "--cgroup-manager", "cgroupfs",
          "--events-backend", "none"]
RUN_OPTS = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]

#: backend settings for recipes: podman as it works on these machines
PODMAN_SETTINGS = {
    "root": ROOT, "runroot": RUNROOT, "runtime": "runc",
    "global_options": ["--cgroup-manager", "cgroupfs", "--events-backend", "none"],
    "ulimits": {"nofile": "1024:1024", "nproc": "4096:4096"}, "auto_pull": False, "stop_timeout": 2,
}


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *GLOBAL, *args], capture_output=True, text=True, check=check, timeout=120)


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine missing a runtime; fail on CI, where `make test` installs it."""
    missing(reason)


def ensure_test_image() -> str:
    """Build (once) the local test image; skip the test when that is impossible here."""
    if os.geteuid() != 0 and not shutil.which("podman"):
        skip_or_fail("podman not installed and not root")
    out = subprocess.run(["bash", str(REPO / "scripts" / "podman-test-image.sh")], capture_output=True, text=True,
                         timeout=900)
    if out.returncode != 0:
        skip_or_fail(f"cannot build the podman test image: {out.stderr[-500:]}")
    return IMAGE


def standin_env() -> dict:
    """Environment variables making the Apptainer stand-in use the test podman storage."""
    return {"STEPCAB_STANDIN_PODMAN_OPTS": shlex.join(GLOBAL), "STEPCAB_STANDIN_RUN_OPTS": shlex.join(RUN_OPTS)}


def containers_named(prefix: str) -> list:
    out = podman("ps", "-a", "--format", "{{.Names}}", check=False)
    return [n for n in out.stdout.split() if n.startswith(prefix)]
