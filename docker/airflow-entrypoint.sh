#!/usr/bin/env bash
# Entrypoint of the stepcab Airflow image (docker/airflow.Dockerfile).
#
#   migrate          wait for the metadata database, then `airflow db migrate` (service airflow-init)
#   bash | sh ...    run a shell
#   version          `airflow version` (the default)
#   anything else    wait for the database, then `exec airflow "$@"`
#                    (api-server, scheduler, dag-processor, triggerer, dags trigger ...)
#
# Configuration comes from the environment only (AIRFLOW__SECTION__KEY, AIRFLOW_CONN_*).
set -euo pipefail

DB_WAIT=${STEPCAB_DB_WAIT_SECONDS:-120}

wait_for_db() {
  local end=$((SECONDS + DB_WAIT))
  until airflow db check >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "stepcab: metadata database unreachable after ${DB_WAIT}s:" >&2
      airflow db check >&2 || true
      exit 1
    fi
    sleep 2
  done
}

case "${1:-version}" in
  migrate)
    wait_for_db
    exec airflow db migrate
    ;;
  bash | sh)
    exec "$@"
    ;;
  version)
    exec airflow version
    ;;
  *)
    wait_for_db
    exec airflow "$@"
    ;;
esac
