#!/usr/bin/env bash
# Run the project's example Airflow (what `make airflow` runs).
#
# Starts `airflow standalone` (API server + UI, scheduler, DAG processor, triggerer) with the
# environment of scripts/airflow-env.sh: the repo's dags/ loader turning example_recipes/ (or
# $STEPCAB_RECIPE_FOLDERS) into DAGs.  Waits for /api/v2/monitor/health, then prints the URL and
# the admin login.  Ctrl-C (or SIGTERM) stops every Airflow process: standalone runs in its own
# process group and the whole group is signalled.
#
# Options:  -v / --verbose   also stream Airflow's output here (it always goes to the log file)
# Env:      AIRFLOW__API__PORT (8080), AIRFLOW_HOME (<repo>/.airflow-home),
#           STEPCAB_STANDALONE_TIMEOUT (seconds to wait for health, 180)
set -u

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/airflow-env.sh
. "$ROOT/scripts/airflow-env.sh"

VERBOSE=0
case "${1:-}" in
    -v|--verbose) VERBOSE=1 ;;
    "") ;;
    *) echo "usage: $0 [-v|--verbose]" >&2; exit 2 ;;
esac

PORT="$AIRFLOW__API__PORT"
TIMEOUT="${STEPCAB_STANDALONE_TIMEOUT:-180}"
PY="$STEPCAB_VENV/bin/python"
URL="http://localhost:$PORT"
LOG="$AIRFLOW_HOME/standalone.log"

command -v airflow >/dev/null 2>&1 || { echo "airflow-standalone: no 'airflow' on PATH (make venv?)" >&2; exit 1; }
mkdir -p "$AIRFLOW_HOME" "$AIRFLOW__STEPCAB__WORKDIR"

if "$PY" - "$PORT" <<'PYEOF'
import socket, sys
s = socket.socket()
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PYEOF
then
    echo "airflow-standalone: port $PORT is already in use (set AIRFLOW__API__PORT)" >&2
    exit 1
fi

echo "airflow-standalone: AIRFLOW_HOME=$AIRFLOW_HOME"
echo "airflow-standalone: dags folder=$AIRFLOW__CORE__DAGS_FOLDER recipe folders=$STEPCAB_RECIPE_FOLDERS"
echo "airflow-standalone: log: $LOG"

# Job control on for the launch: standalone gets its own process group (id = its pid), so Ctrl-C
# reaches only this script, which then stops the group in order.  (Without `set -m` a background
# child of a script starts with SIGINT ignored, and Airflow could not be stopped gracefully.)
: > "$LOG"
set -m
airflow standalone >>"$LOG" 2>&1 < /dev/null &
PGID=$!
set +m
TAIL_PID=""
if [ "$VERBOSE" = 1 ]; then
    tail -n +1 -f "$LOG" &
    TAIL_PID=$!
fi

alive() { kill -0 -- "-$PGID" 2>/dev/null; }

stop() {
    trap - INT TERM HUP
    echo
    echo "airflow-standalone: stopping (process group $PGID)"
    if alive; then
        # Like Ctrl-C in a terminal: every process of the group gets SIGINT and shuts down cleanly.
        kill -INT -- "-$PGID" 2>/dev/null
        for _ in $(seq 1 40); do alive || break; sleep 0.5; done
    fi
    if alive; then
        kill -TERM -- "-$PGID" 2>/dev/null
        for _ in $(seq 1 20); do alive || break; sleep 0.5; done
    fi
    if alive; then
        echo "airflow-standalone: killing what is left" >&2
        kill -KILL -- "-$PGID" 2>/dev/null
    fi
    [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
    wait 2>/dev/null
    echo "airflow-standalone: stopped"
    exit "${1:-0}"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP

# Wait for the API (and the scheduler behind it) to report healthy.
healthy() {
    "$PY" - "$URL/api/v2/monitor/health" <<'PYEOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        h = json.load(r)
except Exception:
    sys.exit(1)
ok = all(h.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler"))
sys.exit(0 if ok else 1)
PYEOF
}
start=$SECONDS
until healthy; do
    if ! kill -0 "$PGID" 2>/dev/null; then
        echo "airflow-standalone: airflow standalone exited early; last lines of $LOG:" >&2
        tail -n 40 "$LOG" >&2
        stop 1
    fi
    if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
        echo "airflow-standalone: not healthy after ${TIMEOUT}s; last lines of $LOG:" >&2
        tail -n 40 "$LOG" >&2
        stop 1
    fi
    sleep 1
done

PASSWORD="$("$PY" - "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated" <<'PYEOF'
import json, sys
try:
    print(json.load(open(sys.argv[1])).get("admin", "?"))
except Exception:
    print("? (see simple_auth_manager_passwords.json.generated in AIRFLOW_HOME)")
PYEOF
)"

cat <<BANNER

  Airflow is up after $((SECONDS - start)) s:  $URL
  login:     admin
  password:  $PASSWORD
  recipes:   $STEPCAB_RECIPE_FOLDERS
  Ctrl-C stops it.

BANNER

# Sleep until the group ends by itself or a signal arrives (the trap runs stop).
while kill -0 "$PGID" 2>/dev/null; do
    sleep 1 &
    wait $! 2>/dev/null
done
echo "airflow-standalone: airflow standalone exited; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2
stop 1
