#!/usr/bin/env bash
# `make bench`: build/refresh the bench venv (benchmarks/venv.sh), then run every benchmark in it.
# Arguments are passed to bench.py, e.g.  benchmarks/run.sh --quick   or   --reps 7 --slurm
# Results: benchmarks/results/latest.md and latest.json.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
bash "$HERE/venv.sh"
VENV="${BENCH_VENV:-$HERE/.bench-venv}"
exec "$VENV/bin/python" "$HERE/bench.py" "$@"
