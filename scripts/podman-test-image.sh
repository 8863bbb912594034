#!/usr/bin/env bash
# Build a small local container image for the podman/docker and Singularity stand-in tests, offline.
#
# No registry is reachable from the test machines, so the image is made with `podman import` of a
# root filesystem tarball built from Debian packages:
#
#   busybox     (default) busybox-static's /bin/busybox plus one symlink per applet (~2 MB, ~1 s)
#   debootstrap `debootstrap --variant=minbase bookworm` (needs the Debian mirror, ~30 s, ~200 MB)
#
# Idempotent: does nothing when the image already exists (use --force to rebuild). Installs podman,
# runc and busybox-static (and debootstrap for that variant) with apt-get when they are missing.
#
# Usage: scripts/podman-test-image.sh [--force] [--variant busybox|debootstrap] [--image NAME]
#
# Env (each also a flag default):
#   STEPCAB_PODMAN_IMAGE    image name        (default localhost/stepcab-test:latest)
#   STEPCAB_PODMAN_ROOT     podman --root     (default /var/tmp/stepcab-podman/root)
#   STEPCAB_PODMAN_RUNROOT  podman --runroot  (default /var/tmp/stepcab-podman/runroot)
#
# podman 4.3.1 from Debian needs `--runtime runc` here (crun fails on hybrid cgroups) and
# `--root/--runroot` on the command line; stepcab's podman backend settings carry the same options.
set -euo pipefail

IMAGE="${STEPCAB_PODMAN_IMAGE:-localhost/stepcab-test:latest}"
ROOT="${STEPCAB_PODMAN_ROOT:-/var/tmp/stepcab-podman/root}"
RUNROOT="${STEPCAB_PODMAN_RUNROOT:-/var/tmp/stepcab-podman/runroot}"
VARIANT="busybox"
FORCE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --force|-f) FORCE=1 ;;
        --variant) VARIANT="$2"; shift ;;
        --image) IMAGE="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "podman-test-image: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

case "$VARIANT" in
    busybox) NEEDED="podman runc busybox-static" ;;
    debootstrap) NEEDED="podman runc busybox-static debootstrap" ;;
    *) echo "podman-test-image: unknown variant '$VARIANT' (busybox|debootstrap)" >&2; exit 2 ;;
esac

missing=""
for pkg in $NEEDED; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "podman-test-image: need root to install:$missing" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "podman-test-image: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
        $SUDO apt-get update -q
        # shellcheck disable=SC2086
        $SUDO apt-get install -y -q --no-install-recommends $missing
    fi
fi

PODMAN=(podman --root "$ROOT" --runroot "$RUNROOT" --runtime runc --cgroup-manager cgroupfs --events-backend none)
mkdir -p "$ROOT" "$RUNROOT"

if [ "$FORCE" = 0 ] && "${PODMAN[@]}" image exists "$IMAGE" 2>/dev/null; then
    echo "podman-test-image: $IMAGE already present (root $ROOT)" >&2
    echo "$IMAGE"
    exit 0
fi

WORK="$(mktemp -d /var/tmp/stepcab-rootfs.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
RFS="$WORK/rootfs"
mkdir -p "$RFS"

if [ "$VARIANT" = busybox ]; then
    mkdir -p "$RFS"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,proc,sys,dev,var/tmp}
    cp /bin/busybox "$RFS/bin/busybox"
    for applet in $("$RFS/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$RFS/bin/$applet"
    done
    ln -sf ../../bin/env "$RFS/usr/bin/env"
    chmod 1777 "$RFS/tmp" "$RFS/var/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$RFS/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$RFS/etc/group"
else
    debootstrap --variant=minbase bookworm "$RFS" "${STEPCAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
    cp /bin/busybox "$RFS/bin/busybox"
fi

if [ "$FORCE" = 1 ]; then
    "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
fi
tar -C "$RFS" -cf "$WORK/rootfs.tar" .
"${PODMAN[@]}" import --change 'CMD=["/bin/sh"]' "$WORK/rootfs.tar" "$IMAGE" >&2
echo "podman-test-image: built $IMAGE ($VARIANT) in $ROOT" >&2
echo "$IMAGE"
