# Environment for running the project's example Airflow setup.  Source it:
#
#     . scripts/airflow-env.sh
#
# - AIRFLOW_HOME        <repo>/.airflow-home (git-ignored) unless already set
# - dags folder         <repo>/dags  (dags/stepcab_dags.py turns recipe folders into DAGs)
# - recipe folders      STEPCAB_RECIPE_FOLDERS, default <repo>/example_recipes (os.pathsep separated),
#                       mirrored into AIRFLOW__STEPCAB__RECIPE_FOLDERS
# - run working dirs    AIRFLOW__STEPCAB__WORKDIR, default <repo>/.stepcab-work
# - no Airflow example DAGs, a modest parallelism (standalone takes ~1.1 GiB at the default 32)
# - API on localhost:$AIRFLOW__API__PORT (8080) with base_url following the port (tasks use it)
# - SQLite lock wait 60 s and task->API timeout 60 s, so a busy machine does not fail tasks
# - the venv's bin first on PATH: `airflow standalone` spawns `airflow ...` subcommands by name
#
# Every variable keeps a value the caller already exported, so e.g.
#     STEPCAB_RECIPE_FOLDERS=/my/recipes make airflow
# works.  Works when sourced from bash or zsh; does not change shell options.

if [ -n "${BASH_SOURCE:-}" ]; then
    _stepcab_env_file="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
    # shellcheck disable=SC2296
    _stepcab_env_file="${(%):-%x}"
else
    _stepcab_env_file="$0"
fi
STEPCAB_ROOT="${STEPCAB_ROOT:-$(cd "$(dirname "$_stepcab_env_file")/.." && pwd)}"
unset _stepcab_env_file
export STEPCAB_ROOT

export AIRFLOW_HOME="${AIRFLOW_HOME:-$STEPCAB_ROOT/.airflow-home}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$STEPCAB_ROOT/dags}"
export STEPCAB_RECIPE_FOLDERS="${STEPCAB_RECIPE_FOLDERS:-$STEPCAB_ROOT/example_recipes}"
# The same folders through the provider's own config option ([stepcab] recipe_folders).
export AIRFLOW__STEPCAB__RECIPE_FOLDERS="${AIRFLOW__STEPCAB__RECIPE_FOLDERS:-$STEPCAB_RECIPE_FOLDERS}"
# Working directories of scheduled runs ([stepcab] workdir), git-ignored.
export AIRFLOW__STEPCAB__WORKDIR="${AIRFLOW__STEPCAB__WORKDIR:-$STEPCAB_ROOT/.stepcab-work}"
# SQLite (the standalone default) with a 60 s lock wait instead of 5 s: no "database is locked"
# when the scheduler, DAG processor, API server and tasks write at the same time.
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db?timeout=60}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-8}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
# Tasks reach the execution API through base_url (default http://localhost:8080): follow the port.
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$AIRFLOW__API__PORT}"
# Tasks' calls to the execution API (default timeout 5 s) can wait on a busy SQLite database.
export AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="${AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT:-60}"
# New recipe files show up quickly in the example setup.
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}"

STEPCAB_VENV="${STEPCAB_VENV:-$STEPCAB_ROOT/.venv}"
export STEPCAB_VENV
case ":$PATH:" in
    *":$STEPCAB_VENV/bin:"*) ;;
    *) export PATH="$STEPCAB_VENV/bin:$PATH" ;;
esac
