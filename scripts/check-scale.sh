#!/usr/bin/env bash
# Scale-out check (issue 6, item 5): an MLflow server backed by PostgreSQL, with several workers,
# takes 16 processes x 4 threads logging at once through libmltrack, and ends up with exactly what
# was logged.
#   - starts Debian's PostgreSQL (scripts/pg-server.sh: 127.0.0.1, a free port, state in a scratch
#     directory) and an MLflow server on it (scripts/mlflow-server.sh ... --backend-store-uri
#     postgresql+psycopg2://... --workers 4);
#   - runs tests/integration/scale.py twice with BUILD_ROOT/default's tests/it_queue and mltrack:
#     straight to the server (the figures: points/s, the server's error answers), then through
#     tests/fault_proxy.py answering 503s and cutting answers after the server acted; each time
#     8 nodes with runs of their own and 8 ranks sharing one run (`mltrack run` makes it; the ranks
#     attach by MLTRACK_RUN_KEY or MLFLOW_RUN_ID), 115,200 points, 137 runs, and the server read
#     back over REST and compared with the ledgers: nothing lost, nothing twice;
#   - stops both servers (also on failure or interruption).
# Usage: scripts/check-scale.sh [--no-faults] [SCALE.PY ARGS...]   (e.g. --procs 8 --points 300)
# Environment:
#   MLTRACK_BUILD_ROOT      where the default build is (default: SRC/build; built if missing)
#   MLTRACK_SCALE_WORKERS   the MLflow server's --workers (default 4)
# Prints the figures of each pass; exits 1 if the server does not hold exactly the ledgers.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FAULTS=1
ARGS=()
for arg in "$@"; do
    case $arg in
    --no-faults) FAULTS=0 ;;
    -h | --help)
        sed -n '2,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) ARGS+=("$arg") ;;
    esac
done

mlt_check_setup "scale check"
BUILD_DIR=$BUILD_ROOT/default
mlt_venv_vars
[[ -x $MLT_PYTHON ]] || mlt_venv
if [[ ! -x $BUILD_DIR/tests/it_queue || ! -x $BUILD_DIR/mltrack ]]; then
    mlt_build "$BUILD_DIR"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-scale-check.XXXXXX")
chmod 711 "$WORK" # PostgreSQL runs as the user postgres when we are root: it must pass through
PG_DIR=$WORK/pg
SRV_DIR=$WORK/mlflow
stop_all() {
    local rc=$?
    "$MLT_SRC/scripts/mlflow-server.sh" stop "$SRV_DIR" >&2 || true
    cp "$SRV_DIR/server.log" "$BUILD_ROOT/mlflow-scale-server.log" 2>/dev/null || true
    "$MLT_SRC/scripts/pg-server.sh" stop "$PG_DIR" >&2 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_URI=$("$MLT_SRC/scripts/pg-server.sh" start "$PG_DIR") || mlt_fail "PostgreSQL did not start"
URI=$("$MLT_SRC/scripts/mlflow-server.sh" start "$SRV_DIR" -- --backend-store-uri "$PG_URI" \
    --workers "${MLTRACK_SCALE_WORKERS:-4}") || mlt_fail "the MLflow server did not start"
echo "MLflow server $URI (--workers ${MLTRACK_SCALE_WORKERS:-4}) on PostgreSQL \
127.0.0.1:$(<"$PG_DIR/port")"

# run_scale LABEL [SCALE.PY ARGS...]: one pass; on failure its files are kept in BUILD_ROOT.
run_scale() {
    local label=$1
    shift
    echo
    echo "---- $label ----"
    rm -rf "$BUILD_ROOT/scale-$label"
    if ! "$MLT_PYTHON" -B "$MLT_SRC/tests/integration/scale.py" --uri "$URI" \
        --build "$BUILD_DIR" --server-log "$SRV_DIR/server.log" --work "$WORK/$label" \
        --json "$BUILD_ROOT/scale-$label.json" --reliability "$RELIABILITY" "$@" \
        ${ARGS[@]+"${ARGS[@]}"}; then
        cp -r "$WORK/$label" "$BUILD_ROOT/scale-$label" 2>/dev/null || true
        mlt_fail "$label: the server does not hold exactly what was logged (the ledgers and \
outputs are kept in $BUILD_ROOT/scale-$label)"
    fi
}

RELIABILITY=$BUILD_DIR/reliability-scale.jsonl # the figures, for docs/reliability.md
rm -f "$RELIABILITY"
run_scale direct
if ((FAULTS)); then
    run_scale faults --faults
fi
echo
"$MLT_PYTHON" "$MLT_SRC/scripts/reliability-report.py" --logs-only "$BUILD_DIR" "$RELIABILITY"
echo
echo "scale check passed"
