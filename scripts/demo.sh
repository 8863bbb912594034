#!/usr/bin/env bash
# Run an example recipe through real Airflow (dag.test() on the embedded SQLite default).
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-example_recipes/text-pipeline.yml}
workdir=${STEPCAB_DEMO_DIR:-$PWD/.stepcab/demo}
mkdir -p "$workdir"
export STEPCAB_AIRFLOW_HOME=${STEPCAB_AIRFLOW_HOME:-$PWD/.stepcab/airflow}
echo "== stepcab demo: $recipe"
echo "== working directory (outputs): $workdir"
echo "== Airflow home (SQLite database, task logs): $STEPCAB_AIRFLOW_HOME"
repo=$PWD
cd "$workdir"
status=0
"$repo/.venv/bin/stepcab" run "$repo/$recipe" "${@:2}" || status=$?
echo "== outputs in $workdir:"; ls -l "$workdir"
echo "== task logs under $STEPCAB_AIRFLOW_HOME/logs"
exit $status
