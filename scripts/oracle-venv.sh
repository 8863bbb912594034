#!/usr/bin/env bash
# Build the Stimela 2.1.4 "oracle" virtualenv used by tests/oracle (golden command lines).
#
# Stimela 2.1.4 pins pydantic<2, so it cannot share the main venv (Airflow 3 needs pydantic 2).
# Idempotent: when the venv already imports stimela 2.1.4 and cultcargo, this exits at once.
# Exit code 0 = ready; non-zero = could not be built (tests then skip the live oracle comparison).
#
# Env: ORACLE_VENV (default <repo>/.oracle-venv), PYTHON (default python3).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${ORACLE_VENV:-$ROOT/.oracle-venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.stepcab-oracle-ok"
WANT="stimela==2.1.4 cult-cargo==0.2.1"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi

echo "oracle-venv: building $VENV ($WANT)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV" || { echo "oracle-venv: cannot create venv" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $WANT >&2 \
    || { echo "oracle-venv: pip install failed (is PyPI reachable?)" >&2; exit 1; }
"$VENV/bin/python" -c "import stimela, cultcargo, scabha; assert stimela.__version__ == '2.1.4', stimela.__version__" >&2 \
    || { echo "oracle-venv: stimela/cultcargo do not import" >&2; exit 1; }
echo "$WANT" > "$STAMP"
echo "oracle-venv: ready" >&2
