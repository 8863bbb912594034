#!/usr/bin/env bash
# Entrypoint of the Slurm images (docker/slurm.Dockerfile): bring this node up with the project's
# cluster script in the role the image sets (STEPCAB_CLUSTER_ROLE=login|compute), stream the daemons'
# logs, and stop cleanly on SIGTERM (docker compose down / stop / scale down).
set -euo pipefail

CLUSTER=${STEPCAB_CLUSTER_SCRIPT:-/opt/stepcab/cluster/cluster.sh}
ROLE=${STEPCAB_CLUSTER_ROLE:?set STEPCAB_CLUSTER_ROLE to login or compute}
STATE=${STEPCAB_CLUSTER_DIR:-/var/tmp/stepcab-cluster}
WORK=${STEPCAB_WORK_DIR:-/work}
tail_pid=

log() { printf '[slurm-%s] %s\n' "$ROLE" "$*" >&2; }

forget_node() {  # a compute node leaving for good takes its (dynamic) node out of Slurm
  local conf=$STATE/spool/d/conf-cache/slurm.conf
  [ "$ROLE" = compute ] && [ -f "$conf" ] || return 0
  SLURM_CONF=$conf scontrol delete nodename="$(hostname -s)" >/dev/null 2>&1 || true
}

stop() {
  log "stopping"
  "$CLUSTER" down || true
  forget_node
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
  exit 0
}
trap stop TERM INT

if [ "$ROLE" = login ]; then
  # the run directories shared by Airflow's workers and the jobs (same uid on both sides)
  mkdir -p "$WORK"
  chmod 1777 "$WORK"
fi
"$CLUSTER" up
if [ "$ROLE" = login ]; then
  log "Airflow connection: $("$CLUSTER" conn)"
fi
mkdir -p "$STATE/log"
tail -n +1 -F "$STATE"/log/*.log &
tail_pid=$!

# Exit (docker restarts the container) when a daemon dies; sleep in the background so that
# SIGTERM is handled at once.
while "$CLUSTER" health; do
  sleep 10 &
  wait $! || true
done
log "a daemon stopped; status:"
"$CLUSTER" status >&2 || true
"$CLUSTER" down || true
exit 1
