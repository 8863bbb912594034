#!/usr/bin/env bash
# Start an Airflow Edge worker on a cluster's login node (docs/hpc-site.md).
#
# The worker only makes outbound HTTP(S) calls to the Airflow API server: it pulls the tasks of
# its queues, runs them here (Slurm steps with `ssh_conn_id: local` call sbatch/squeue/sacct on
# this node) and pushes their logs back. It needs no metadata-database access and no inbound port.
#
#   STEPCAB_EDGE_API_URL=https://airflow.example.org \
#   STEPCAB_EDGE_SECRET_FILE=~/.config/stepcab/jwt_secret \
#   STEPCAB_DAGS_FOLDER=~/pipelines/dags scripts/edge-worker.sh
#
# Env:
#   STEPCAB_EDGE_API_URL      base URL of the Airflow API server (required)
#   STEPCAB_EDGE_SECRET_FILE  file holding the deployment's [api_auth] jwt_secret (required; keep it 0600)
#   STEPCAB_DAGS_FOLDER       the same DAG files (and recipes) the scheduler parses (required)
#   STEPCAB_EDGE_QUEUES       comma-separated queues to serve (default: edge)
#   STEPCAB_EDGE_CONCURRENCY  parallel tasks (default: 8)
#   STEPCAB_EDGE_NAME         worker name shown in the UI (default: <host>-stepcab)
#   AIRFLOW_HOME              the worker's own state (default: ~/.stepcab/edge-worker)
#   STEPCAB_VENV              the virtualenv with Airflow, the edge3 provider and stepcab (default: $VIRTUAL_ENV)
set -euo pipefail

: "${STEPCAB_EDGE_API_URL:?set STEPCAB_EDGE_API_URL to the base URL of the Airflow API server}"
: "${STEPCAB_EDGE_SECRET_FILE:?set STEPCAB_EDGE_SECRET_FILE to a file with the jwt secret}"
: "${STEPCAB_DAGS_FOLDER:?set STEPCAB_DAGS_FOLDER to the DAG folder the scheduler parses}"
[ -r "$STEPCAB_EDGE_SECRET_FILE" ] || { echo "edge-worker: cannot read $STEPCAB_EDGE_SECRET_FILE" >&2; exit 2; }
VENV=${STEPCAB_VENV:-${VIRTUAL_ENV:-}}
AIRFLOW=airflow
[ -n "$VENV" ] && AIRFLOW=$VENV/bin/airflow && export PATH="$VENV/bin:$PATH"
command -v "$AIRFLOW" >/dev/null || { echo "edge-worker: no airflow (set STEPCAB_VENV)" >&2; exit 2; }
command -v sbatch >/dev/null || echo "edge-worker: warning: no sbatch on PATH (Slurm steps with ssh_conn_id: local will fail)" >&2

API=${STEPCAB_EDGE_API_URL%/}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$HOME/.stepcab/edge-worker}
mkdir -p "$AIRFLOW_HOME"
export AIRFLOW__CORE__DAGS_FOLDER=$STEPCAB_DAGS_FOLDER
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=airflow.providers.edge3.executors.EdgeExecutor
export AIRFLOW__EDGE__API_ENABLED=True
export AIRFLOW__EDGE__API_URL=$API/edge_worker/v1/rpcapi
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=$API/execution/
AIRFLOW__API_AUTH__JWT_SECRET=$(cat "$STEPCAB_EDGE_SECRET_FILE")
export AIRFLOW__API_AUTH__JWT_SECRET
# never the central database: a local file nobody migrates (a task reaching for the DB fails loudly)
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/no-metadata-db-here.db
export AIRFLOW__EDGE__JOB_POLL_INTERVAL=${AIRFLOW__EDGE__JOB_POLL_INTERVAL:-5}
export AIRFLOW__EDGE__HEARTBEAT_INTERVAL=${AIRFLOW__EDGE__HEARTBEAT_INTERVAL:-10}

exec "$AIRFLOW" edge worker --queues "${STEPCAB_EDGE_QUEUES:-edge}" \
    --concurrency "${STEPCAB_EDGE_CONCURRENCY:-8}" --edge-hostname "${STEPCAB_EDGE_NAME:-$(hostname -s)-stepcab}"
