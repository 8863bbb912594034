#!/usr/bin/env bash
# Build the benchmark virtualenv (benchmarks/.bench-venv): the project's constraints + dag-factory 1.x
# + profilers, with this package installed editable. Kept apart from the main .venv so that the main
# environment stays exactly the constraints file. Idempotent (stamp file).
#
# Env: BENCH_VENV (default <repo>/benchmarks/.bench-venv), PYTHON (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/benchmarks/.bench-venv}"
PY="${PYTHON:-python3}"
CONSTRAINTS="$ROOT/constraints/constraints-3.11.txt"
WANT="dag-factory>=1.1,<2 pyinstrument>=5 $(sha256sum "$ROOT/pyproject.toml" "$CONSTRAINTS" | sha256sum | cut -c1-16)"
STAMP="$VENV/.stepcab-bench-ok"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi
echo "bench-venv: building $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# our package and its dependencies exactly as the constraints pin them (same as the main venv) ...
"${PIP[@]}" -c "$CONSTRAINTS" -e "$ROOT"
"${PIP[@]}" --no-deps cult-cargo==0.2.1
# ... then the contenders and profilers, still under the constraints for anything they share
"${PIP[@]}" -c "$CONSTRAINTS" "dag-factory>=1.1,<2" "pyinstrument>=5"
"$VENV/bin/python" -c "import dagfactory, airflow, airflow_provider_stepcab; print('dag-factory', dagfactory.__version__, 'airflow', airflow.__version__)" >&2
echo "$WANT" > "$STAMP"
echo "bench-venv: ready" >&2
