#!/usr/bin/env bash
# A real single-node Slurm cluster reachable over SSH on 127.0.0.1, for tests and demos.
#
#   scripts/cluster/cluster.sh install   apt-get the packages (skipped when present)
#   scripts/cluster/cluster.sh up        start munge, MariaDB + slurmdbd, slurmctld, slurmd, sshd (idempotent)
#   scripts/cluster/cluster.sh down      stop everything it started
#   scripts/cluster/cluster.sh status    print what runs
#   scripts/cluster/cluster.sh conn      print the Airflow SSH connection (JSON) for the cluster user
#
# One source of truth: docker/ images reuse the templates in this folder. Runs as root.
# State (configs, keys, logs, pid files) lives in $STEPCAB_CLUSTER_DIR (default /var/tmp/stepcab-cluster).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${STEPCAB_CLUSTER_DIR:-/var/tmp/stepcab-cluster}
SSH_PORT=${STEPCAB_SSH_PORT:-2222}
CLUSTER_USER=${STEPCAB_CLUSTER_USER:-stepcab}
DB_PORT=${STEPCAB_DB_PORT:-3307}
WITH_DBD=${STEPCAB_WITH_SLURMDBD:-1}
PKGS=(slurm-wlm munge openssh-server)
[ "$WITH_DBD" = 1 ] && PKGS+=(slurmdbd mariadb-server)

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
      -e "s|@ACCOUNTING@|$ACCOUNTING|g" "$src" > "$dest"
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
  id "$CLUSTER_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$CLUSTER_USER"
  usermod -p '*' "$CLUSTER_USER"   # a locked (!) account is refused by sshd even with a key
  local home; home=$(getent passwd "$CLUSTER_USER" | cut -d: -f6)
  mkdir -p "$STATE/ssh" "$home/.ssh"
  [ -f "$STATE/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh/id_ed25519" -C stepcab-tests
  [ -f "$STATE/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh/host_ed25519"
  cp "$STATE/ssh/id_ed25519.pub" "$home/.ssh/authorized_keys"
  chown -R "$CLUSTER_USER:" "$home/.ssh"; chmod 700 "$home/.ssh"; chmod 600 "$home/.ssh/authorized_keys"
  chmod 600 "$STATE/ssh/id_ed25519"
}

start_munge() {
  alive munged && return 0
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
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

start_slurm() {
  if ! alive slurmctld; then
    SLURM_CONF="$STATE/etc/slurm.conf" /usr/sbin/slurmctld -f "$STATE/etc/slurm.conf" -i
  fi
  if ! alive slurmd; then
    SLURM_CONF="$STATE/etc/slurm.conf" /usr/sbin/slurmd -f "$STATE/etc/slurm.conf"
  fi
  if [ "$WITH_DBD" = 1 ]; then  # register the cluster and the test user for accounting (idempotent)
    wait_for 30 "sacctmgr" env SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i -n list cluster
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add cluster stepcab >/dev/null 2>&1 || true
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add account tests cluster=stepcab >/dev/null 2>&1 || true
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add user "$CLUSTER_USER" account=tests >/dev/null 2>&1 || true
    SLURM_CONF="$STATE/etc/slurm.conf" sacctmgr -i add user root account=tests >/dev/null 2>&1 || true
  fi
  wait_for 60 "an idle node" bash -c "SLURM_CONF='$STATE/etc/slurm.conf' sinfo -h -o %T | grep -qx idle"
}

start_sshd() {
  alive sshd && return 0
  mkdir -p /run/sshd
  /usr/sbin/sshd -f "$STATE/etc/sshd_config" -E "$STATE/log/sshd.log"
  wait_for 10 sshd bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT"
}

cmd_up() {
  need_root
  cmd_install
  mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d,work}
  chmod 1777 "$STATE/work"
  NODELINE=$(slurmd -C | head -n 1 | sed -e "s/NodeName=[^ ]*/NodeName=$(hostname -s) NodeAddr=127.0.0.1/")
  ACCOUNTING=none
  [ "$WITH_DBD" = 1 ] && ACCOUNTING=slurmdbd
  render "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf"
  render "$HERE/sshd_config.in" "$STATE/etc/sshd_config"
  if [ "$WITH_DBD" = 1 ]; then
    render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf"
    chmod 600 "$STATE/etc/slurmdbd.conf"
  fi
  # Commands on the cluster find the config without SLURM_CONF being passed over SSH.
  mkdir -p /etc/slurm
  [ -e /etc/slurm/slurm.conf ] && ! [ -L /etc/slurm/slurm.conf ] && mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.orig
  ln -sfn "$STATE/etc/slurm.conf" /etc/slurm/slurm.conf
  setup_user
  start_munge
  start_db
  start_slurm
  start_sshd
  log "up: ssh -p $SSH_PORT -i $STATE/ssh/id_ed25519 $CLUSTER_USER@127.0.0.1 (work dir $STATE/work)"
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
  printf '{"conn_type": "ssh", "host": "127.0.0.1", "port": %s, "login": "%s", "extra": {"key_file": "%s", "no_host_key_check": true}}\n' \
    "$SSH_PORT" "$CLUSTER_USER" "$STATE/ssh/id_ed25519"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  conn) cmd_conn ;;
  *) echo "usage: $0 install|up|down|status|conn" >&2; exit 2 ;;
esac
