#!/usr/bin/env bash
# Build the tool venvs of the real radio-astronomy pipeline (example_recipes/science/) from the
# pinned lists constraints/science/NAME.txt (complete `pip freeze`s, installed with --no-deps: no
# resolution, the same set every time). Idempotent: a venv whose stamp matches its list's hash is
# left alone; a changed list rebuilds that venv from scratch. Nothing downloads when the recipe runs.
#
#   sim   simms, crystalball, tricolour, python-casacore (+ our corrupt tool); pydantic 2
#   cal   quartical (pulls stimela 2.1.4, pydantic<2), breizorro, bdsf, aimfast
#   casa  casatasks/casatools + casadata; a casasiteconfig.py points CASA at casadata's measures
#         and turns its auto-updates off (else it tries to download on import)
#
# Env: STEPCAB_SCIENCE_VENVS (default ~/.cache/stepcab/science-venvs: outside the checkout, so a
# machine that keeps its home reuses them), PYTHON (default python3), SCIENCE_VENVS (names to build,
# default "sim cal casa"). Prints the venvs' directory on the last line.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${STEPCAB_SCIENCE_VENVS:-$HOME/.cache/stepcab/science-venvs}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"

build() {
    local name="$1" list="$ROOT/constraints/science/$1.txt" venv="$DEST/$1"
    local want; want="$(sha256sum "$list" | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.stepcab-science" 2>/dev/null)" = "$want" ]; then
        echo "science-venv: $name up to date" >&2
        return 0
    fi
    local start=$SECONDS
    echo "science-venv: building $name in $venv" >&2
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    if ! nice -n 10 "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile --no-deps \
            -r "$list" > "$venv.pip.log" 2>&1; then
        grep -v "^WARNING: Location" "$venv.pip.log" >&2
        echo "science-venv: pip install of $name failed" >&2
        return 1
    fi
    rm -f "$venv.pip.log"
    "$venv/bin/python" -m pip check --disable-pip-version-check >&2
    if [ "$name" = casa ]; then
        local site; site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        cat > "$site/casasiteconfig.py" <<'PYEOF'
# written by scripts/science-venv.sh: measures from the casadata package, never downloaded
import casadata as _casadata
measurespath = _casadata.datapath
measures_auto_update = False
data_auto_update = False
PYEOF
    fi
    echo "$want" > "$venv/.stepcab-science"
    echo "science-venv: $name built in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)" >&2
}

# The builds wait mostly on downloads and unpacking: run them side by side.
pids=()
for name in ${SCIENCE_VENVS:-sim cal casa}; do
    build "$name" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
[ "$failed" = 0 ] || { echo "science-venv: a build failed" >&2; exit 1; }
echo "$DEST"
