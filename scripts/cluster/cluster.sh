#!/usr/bin/env bash
# A real single-node Slurm cluster reachable over SSH on 127.0.0.1, for tests and demos.
#
#   scripts/cluster/cluster.sh install   apt-get the packages (skipped when present)
#   scripts/cluster/cluster.sh up        start munge, MariaDB + slurmdbd, slurmctld, slurmd, sshd (idempotent)
#   scripts/cluster/cluster.sh down      stop everything it started
#   scripts/cluster/cluster.sh status    print what runs
#   scripts/cluster/cluster.sh conn      print the Airflow SSH connection (JSON) for the cluster user
#   scripts/cluster/cluster.sh health    exit 0 when this node's daemons answer (container health checks)
#   scripts/cluster/cluster.sh render    only write this role's configs into $STEPCAB_CLUSTER_DIR/etc
#
# One source of truth: docker/ images reuse this script and the templates in this folder. Runs as root.
# State (configs, keys, logs, pid files) lives in $STEPCAB_CLUSTER_DIR (default /var/tmp/stepcab-cluster).
#
# Roles (STEPCAB_CLUSTER_ROLE), for clusters of several hosts or containers (docker/compose.yaml):
#   all      (default) everything on 127.0.0.1, one static node: the test cluster
#   login    munge, MariaDB + slurmdbd, slurmctld (configless, dynamic nodes) and sshd on all interfaces
#   compute  munge and `slurmd -Z`: a dynamic node that fetches slurm.conf from the controller and
#            registers itself under its host name, so any number of them can join
# login and compute need STEPCAB_CLUSTER_SHARED, a directory every node mounts (the login node writes
# the munge key and the cluster user's SSH key pair there); compute needs STEPCAB_CLUSTER_CONTROLLER
# (the login node's host name). STEPCAB_CLUSTER_UID fixes the cluster user's uid on every node.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${STEPCAB_CLUSTER_DIR:-/var/tmp/stepcab-cluster}
SSH_PORT=${STEPCAB_SSH_PORT:-2222}
CLUSTER_USER=${STEPCAB_CLUSTER_USER:-stepcab}
DB_PORT=${STEPCAB_DB_PORT:-3307}
WITH_DBD=${STEPCAB_WITH_SLURMDBD:-1}
ROLE=${STEPCAB_CLUSTER_ROLE:-all}
SHARED=${STEPCAB_CLUSTER_SHARED:-}
CONTROLLER=${STEPCAB_CLUSTER_CONTROLLER:-}
CLUSTER_UID=${STEPCAB_CLUSTER_UID:-}
MAX_NODES=${STEPCAB_CLUSTER_MAX_NODES:-64}
case "$ROLE" in
  all) PKGS=(slurm-wlm munge openssh-server) ;;
  login) PKGS=(slurmctld slurm-client munge openssh-server) ;;
  compute) PKGS=(slurmd slurm-client munge); WITH_DBD=0 ;;
  *) echo "STEPCAB_CLUSTER_ROLE must be all, login or compute (not $ROLE)" >&2; exit 2 ;;
esac
[ "$WITH_DBD" = 1 ] && PKGS+=(slurmdbd mariadb-server)
if [ "$ROLE" = all ]; then
  SSH_LISTEN=127.0.0.1; KEYDIR=$STATE/ssh
else
  SSH_LISTEN=0.0.0.0; KEYDIR=${SHARED:-$STATE}/ssh
fi

log() { printf '[cluster] %s\n' "$*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }; }

cmd_install() {
  need_root
  local missing=()
  for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

render() {  # render TEMPLATE > DEST substituting @VAR@ placeholders
  local src=$1 dest=$2
  sed -e "s|@STATE@|$STATE|g" -e "s|@HOST@|$(hostname -s)|g" -e "s|@NODELINE@|$NODELINE|g" \
      -e "s|@SSH_PORT@|$SSH_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@USER@|$CLUSTER_USER|g" \
      -e "s|@ACCOUNTING@|$ACCOUNTING|g" -e "s|@CTLD@|$CTLD|g" -e "s|@SSH_LISTEN@|$SSH_LISTEN|g" \
      -e "s|@CLUSTER_EXTRA@|$CLUSTER_EXTRA|g" -e "s|@TASKPLUGIN@|$TASKPLUGIN|g" "$src" > "$dest"
}

pidfile() {
  case $1 in
    munged) echo /run/munge/munged.pid ;;
    mariadbd) echo "$STATE/run/mysqld/mariadbd.pid" ;;
    *) echo "$STATE/run/$1.pid" ;;
  esac
}

alive() { local f; f=$(pidfile "$1"); [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $end ] && { log "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}

setup_user() {
  if ! id "$CLUSTER_USER" >/dev/null 2>&1; then
    # shellcheck disable=SC2046  # no uid option unless STEPCAB_CLUSTER_UID is set
    useradd -m -s /bin/bash $([ -n "$CLUSTER_UID" ] && echo "-u $CLUSTER_UID") "$CLUSTER_USER" 2>/dev/null
  fi
  usermod -p '*' "$CLUSTER_USER"   # a locked (!) account is refused by sshd even with a key
  [ "$ROLE" = compute ] && return 0   # compute nodes run jobs; only the login node takes SSH logins
  local home; home=$(getent passwd "$CLUSTER_USER" | cut -d: -f6)
  mkdir -p "$STATE/ssh" "$KEYDIR" "$home/.ssh"
  [ -f "$KEYDIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEYDIR/id_ed25519" -C stepcab-tests
  [ -f "$STATE/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh/host_ed25519"
  cp "$KEYDIR/id_ed25519.pub" "$home/.ssh/authorized_keys"
  chown -R "$CLUSTER_USER:" "$home/.ssh"; chmod 700 "$home/.ssh"; chmod 600 "$home/.ssh/authorized_keys"
  chmod 600 "$KEYDIR/id_ed25519"
  # shared with the clients (Airflow runs as the same uid in docker/compose.yaml)
  [ "$ROLE" = login ] && chown "$CLUSTER_USER:" "$KEYDIR/id_ed25519" "$KEYDIR/id_ed25519.pub"
  return 0
}

share_munge_key() {  # login: publish this cluster's key (made once); compute: wait for it and install it
  [ "$ROLE" = all ] && return 0
  [ -n "$SHARED" ] || { log "role $ROLE needs STEPCAB_CLUSTER_SHARED"; exit 2; }
  mkdir -p "$SHARED" /etc/munge
  if [ "$ROLE" = login ] && [ ! -s "$SHARED/munge.key" ]; then
    mungekey --create --keyfile="$SHARED/munge.key.tmp" --force
    mv "$SHARED/munge.key.tmp" "$SHARED/munge.key"   # atomic: compute nodes never see half a key
  fi
  wait_for 300 "$SHARED/munge.key" test -s "$SHARED/munge.key"
  install -m 0400 "$SHARED/munge.key" /etc/munge/munge.key
}

start_munge() {
  alive munged && return 0
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  share_munge_key
  [ -f /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown -R munge: /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid --force
  wait_for 10 munged alive munged
}

start_db() {
  [ "$WITH_DBD" = 1 ] || return 0
  if ! alive mariadbd; then
    mkdir -p "$STATE/mysql" "$STATE/run/mysqld"; chown -R mysql: "$STATE/mysql" "$STATE/run/mysqld"
    if [ ! -d "$STATE/mysql/mysql" ]; then
      mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
    fi
    (setsid /usr/sbin/mariadbd --user=mysql --datadir="$STATE/mysql" --bind-address=127.0.0.1 \
      --port="$DB_PORT" --socket="$STATE/run/mysqld/mysqld.sock" --pid-file="$STATE/run/mysqld/mariadbd.pid" \
      --skip-log-bin >"$STATE/log/mariadbd.log" 2>&1 &)
    wait_for 30 mariadb mariadb --socket="$STATE/run/mysqld/mysqld.sock" -e 'select 1'
    mariadb --socket="$STATE/run/mysqld/mysqld.sock" <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
  fi
  if ! alive slurmdbd; then
    # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
    SLURM_CONF="$STATE/etc/slurm.conf" /usr/sbin/slurmdbd
    wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
  fi
}

start_compute() {  # a dynamic node: config from the controller (configless), registers itself
  [ -n "$CONTROLLER" ] || { log "role compute needs STEPCAB_CLUSTER_CONTROLLER"; exit 2; }
  wait_for 300 "slurmctld on $CONTROLLER" bash -c "exec 3<>/dev/tcp/$CONTROLLER/6817"
  if ! alive slurmd; then
    /usr/sbin/slurmd -Z --conf-server "$CONTROLLER" --conf "Feature=compute"
  fi
  wait_for 60 slurmd alive slurmd
}

start_slurm() {
  [ "$ROLE" = compute ] && { start_compute; return 0; }
  if ! alive slurmctld; then
    SLURM_CONF="$STATE/etc/slurm.conf" /usr/sbin/slurmctld -f "$STATE/etc/slurm.conf" -i
  fi
  if [ "$ROLE" = all ] && ! alive slurmd; then
    SLURM_CONF="$STATE/etc/slurm.conf" /usr/sbin/slurmd -f "$STATE/etc/slurm.conf"
  fi
  if [ "$WITH_DBD" = 1 ]; then  # register the cluster and the test user for accounting (idempotent)
    wait_for 30 "sacctmgr" env SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i -n list cluster
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add cluster stepcab >/dev/null 2>&1 || true
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add account tests cluster=stepcab >/dev/null 2>&1 || true
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add user "$CLUSTER_USER" account=tests >/dev/null 2>&1 || true
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add user root account=tests >/dev/null 2>&1 || true
  fi
  if [ "$ROLE" = all ]; then
    wait_for 60 "an idle node" bash -c "SLURM_CONF='$STATE/etc/slurm.conf' sinfo -h -o %T | grep -qx idle"
  else
    wait_for 60 slurmctld env SLURM_CONF="$STATE/etc/slurm.conf" scontrol ping
  fi
}

start_sshd() {
  [ "$ROLE" = compute ] && return 0
  alive sshd && return 0
  mkdir -p /run/sshd
  /usr/sbin/sshd -f "$STATE/etc/sshd_config" -E "$STATE/log/sshd.log"
  wait_for 10 sshd bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT"
  return 0
}

memory_cgroup_writable() {  # cgroup v1 memory controller mounted and writable (with swap accounting)
  local probe=/sys/fs/cgroup/memory/stepcab-probe.$$
  [ -e /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes ] || return 1
  mkdir "$probe" 2>/dev/null || return 1
  rmdir "$probe"
}

render_configs() {  # slurm.conf, sshd_config, slurmdbd.conf for this role into $STATE/etc
  mkdir -p "$STATE/etc"
  ACCOUNTING=none
  [ "$WITH_DBD" = 1 ] && ACCOUNTING=slurmdbd
  CTLD="$(hostname -s)(127.0.0.1)"
  CLUSTER_EXTRA="# single node: see NodeName below"
  if [ "$ROLE" = all ]; then
    NODELINE=$(slurmd -C | head -n 1 | sed -e "s/NodeName=[^ ]*/NodeName=$(hostname -s) NodeAddr=127.0.0.1/")
  else  # nodes join at run time (slurmd -Z) and take their slurm.conf from slurmctld
    CTLD=$(hostname -s)
    NODELINE="# no static nodes: compute nodes register with slurmd -Z (role compute)"
    CLUSTER_EXTRA="SlurmctldParameters=enable_configless\nMaxNodeCount=$MAX_NODES\nTreeWidth=65533\nCommunicationParameters=NoAddrCache"
  fi
  # Memory limits are enforced (a job above --mem ends OUT_OF_MEMORY) where this host lets slurmd
  # make cgroup v1 memory groups; elsewhere (some containers) jobs run unconstrained (task/none).
  TASKPLUGIN=task/none
  if [ "${STEPCAB_CLUSTER_MEMLIMIT:-auto}" != off ] && memory_cgroup_writable; then
    TASKPLUGIN=task/cgroup
    cp "$HERE/cgroup.conf.in" "$STATE/etc/cgroup.conf"
  fi
  render "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf"
  render "$HERE/sshd_config.in" "$STATE/etc/sshd_config"
  if [ "$WITH_DBD" = 1 ]; then
    render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf"
    chmod 600 "$STATE/etc/slurmdbd.conf"
  fi
}

cmd_up() {
  need_root
  cmd_install
  mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d,work}
  chmod 1777 "$STATE/work"
  if [ "$ROLE" = compute ]; then  # slurm.conf comes from the controller (configless)
    setup_user
    start_munge
    start_slurm
    log "up: compute node $(hostname -s) registered with $CONTROLLER"
    return 0
  fi
  render_configs
  # Commands on the cluster find the config without SLURM_CONF being passed over SSH.
  mkdir -p /etc/slurm
  [ -e /etc/slurm/slurm.conf ] && ! [ -L /etc/slurm/slurm.conf ] && mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.orig
  ln -sfn "$STATE/etc/slurm.conf" /etc/slurm/slurm.conf
  setup_user
  start_munge
  start_db
  start_slurm
  start_sshd
  log "up: ssh -p $SSH_PORT -i $KEYDIR/id_ed25519 $CLUSTER_USER@127.0.0.1 (work dir $STATE/work)"
}

cmd_down() {
  for d in sshd slurmd slurmctld slurmdbd mariadbd munged; do
    local f; f=$(pidfile "$d")
    if alive "$d"; then
      kill "$(cat "$f")" 2>/dev/null || true
      local n=0
      while alive "$d" && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
      alive "$d" && kill -9 "$(cat "$f")" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  log "down"
}

cmd_status() {
  for d in munged mariadbd slurmdbd slurmctld slurmd sshd; do
    if alive "$d"; then echo "$d running"; else echo "$d stopped"; fi
  done
}

cmd_conn() {
  local host=127.0.0.1
  [ "$ROLE" = all ] || host=${CONTROLLER:-$(hostname -s)}
  printf '{"conn_type": "ssh", "host": "%s", "port": %s, "login": "%s", "extra": {"key_file": "%s", "no_host_key_check": true}}\n' \
    "$host" "$SSH_PORT" "$CLUSTER_USER" "$KEYDIR/id_ed25519"
}

cmd_health() {
  alive munged || return 1
  case "$ROLE" in
    compute) alive slurmd ;;
    *) alive slurmctld && alive sshd && SLURM_CONF="$STATE/etc/slurm.conf" scontrol ping >/dev/null 2>&1 ;;
  esac
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  conn) cmd_conn ;;
  health) cmd_health ;;
  render) render_configs ;;
  *) echo "usage: $0 install|up|down|status|conn|health|render" >&2; exit 2 ;;
esac
