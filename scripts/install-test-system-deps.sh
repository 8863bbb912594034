#!/usr/bin/env bash
# Install the system packages the test suite needs (idempotent, fast when already present).
#
#   chromium           - Debian's headless browser, driven by Playwright in tests/test_browser_trigger.py
#                        (Playwright's own browser download is never used: executable_path=/usr/bin/chromium).
#   podman runc busybox-static - local container images and runs (podman/singularity stand-in/kube fake)
#   slurm-wlm munge openssh-server slurmdbd mariadb-server - the real test cluster (scripts/cluster)
#   postgresql         - Airflow on Postgres through the scheduler (scripts/postgres.sh)
#   shellcheck         - lints the docker/ entrypoints
#
# Runs apt only for packages that are missing. Needs root (or sudo) when something must be installed.
# Env: STEPCAB_APT_PACKAGES overrides the package list (space separated).
set -eu

PACKAGES="${STEPCAB_APT_PACKAGES:-chromium podman runc busybox-static uidmap slurm-wlm munge openssh-server slurmdbd mariadb-server postgresql shellcheck}"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "install-test-system-deps: already installed:$(printf ' %s' $PACKAGES)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-test-system-deps: need root to install:$missing" >&2
        exit 1
    fi
fi

echo "install-test-system-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# Refresh the index only when it is missing or the first attempt fails (stale lists).
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then
    $SUDO apt-get update -q
fi
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi
