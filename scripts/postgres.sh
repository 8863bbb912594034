#!/usr/bin/env bash
# A throwaway PostgreSQL for Airflow's metadata database, on 127.0.0.1 only.
#
#   scripts/postgres.sh install   apt-get the server (skipped when present)
#   scripts/postgres.sh up        initdb (first time) and start; create role + database (idempotent)
#   scripts/postgres.sh down      stop the server and delete its data directory (STEPCAB_PG_KEEP=1 keeps it)
#   scripts/postgres.sh status    print "running" or "stopped" (exit 0 / 3)
#   scripts/postgres.sh url       print the SQLAlchemy URL for Airflow's [database] sql_alchemy_conn
#
# Env: STEPCAB_PG_DIR (default /var/tmp/stepcab-postgres; data, socket and log live there),
#      STEPCAB_PG_PORT (5433), STEPCAB_PG_USER / STEPCAB_PG_PASSWORD / STEPCAB_PG_DB (airflow).
# PostgreSQL refuses to run as root: as root the server runs as the "postgres" user, which then
# must be able to reach STEPCAB_PG_DIR (keep it out of 0700 directories such as pytest's tmp).
# Durability is switched off (fsync, synchronous_commit): this database is for tests and demos.
set -euo pipefail

DIR=${STEPCAB_PG_DIR:-/var/tmp/stepcab-postgres}
PORT=${STEPCAB_PG_PORT:-5433}
DB_USER=${STEPCAB_PG_USER:-airflow}
DB_PASSWORD=${STEPCAB_PG_PASSWORD:-airflow}
DB_NAME=${STEPCAB_PG_DB:-airflow}
DATA=$DIR/data
SOCK=$DIR/run

log() { printf '[postgres] %s\n' "$*" >&2; }

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
  return 1
}

as_owner() {  # run a command as the server's owner (postgres when we are root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd_install() {
  pg_bindir >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { log "PostgreSQL is missing and installing it needs root"; exit 2; }
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
}

running() {
  local bin; bin=$(pg_bindir) || return 1
  [ -f "$DATA/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

psql_admin() {  # psql_admin < SQL: over the private unix socket as the bootstrap superuser
  local bin; bin=$(pg_bindir)
  as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres
}

cmd_up() {
  cmd_install
  local bin; bin=$(pg_bindir)
  mkdir -p "$DIR" "$SOCK"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR" "$SOCK"; fi
  chmod 0755 "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; exit 1; }
  fi
  if ! running; then
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCK -c max_connections=200 -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off" start >/dev/null \
      || { tail -n 30 "$DIR/postgres.log" >&2; exit 1; }
  fi
  psql_admin <<SQL
SELECT 'CREATE ROLE "$DB_USER" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER')\\gexec
ALTER ROLE "$DB_USER" WITH LOGIN PASSWORD '$DB_PASSWORD';
SELECT 'CREATE DATABASE "$DB_NAME" OWNER "$DB_USER"'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME')\\gexec
SQL
  log "up: $(cmd_url) (data $DATA, log $DIR/postgres.log)"
}

cmd_down() {
  local bin
  if bin=$(pg_bindir) && running; then
    as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || true
  fi
  if [ "${STEPCAB_PG_KEEP:-0}" != 1 ] && [ -d "$DIR" ]; then
    rm -rf "$DATA" "$SOCK" "$DIR/postgres.log" "$DIR/initdb.log"
    rmdir "$DIR" 2>/dev/null || true
  fi
  log "down"
}

cmd_status() {
  if running; then echo running; else echo stopped; return 3; fi
}

cmd_url() {
  printf 'postgresql+psycopg2://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$DB_PASSWORD" "$PORT" "$DB_NAME"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) echo "usage: $0 install|up|down|status|url" >&2; exit 2 ;;
esac
