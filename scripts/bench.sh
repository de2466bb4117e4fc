#!/usr/bin/env bash
# Runs mltrack's benchmark suite (bench/, issue 4) on a fresh machine, from any directory:
#   Debian packages and the Python venv with the pinned MLflow (installed if missing), an optimized
#   build in BUILD_ROOT/bench (configure's default CFLAGS, -g -O2, no sanitizers) with `make bench`,
#   a local MLflow server (sqlite, --workers 1) of its own on 127.0.0.1, then bench/bench.py: each
#   workload's variants side by side in every round, the server's contents checked after each, and
#   a table of medians, ratios and targets on stdout (raw results in BUILD_ROOT/bench/results.json).
# Usage: scripts/bench.sh [--rounds N] [--w4-rounds N] [--quick]
#                         [--only W1,W2,W3,W4,MEM,HOTPATH,CLI,ART,SCALE,RELAY] [--write-baseline]
#   --rounds N        rounds of W1-W3 and SCALE (default 3; 1 with --quick)
#   --w4-rounds N     rounds of W4, each a replay of 1M points at the server's pace (default 1)
#   --quick           fewer points (a smoke test, about 2 minutes)
#   --only LIST       only these workloads (comma-separated; CLI: `mltrack run`'s figures; ART:
#                     artifacts, a 1 GiB file and 1000 small ones (256 MiB and 200 with --quick); SCALE:
#                     16 processes x 4 threads at once into an MLflow server with --workers 4 on
#                     PostgreSQL (scripts/pg-server.sh), then on SQLite, servers of its own;
#                     RELAY: 1, 4 and 8 writers with no network (unshare -n) delivered live by
#                     `mltrack sync --follow`: points/s, and a probe's latency to the server)
#   --write-baseline  write the measured hot-path counts to bench/hotpath-baseline.txt
# Environment: MLTRACK_SKIP_DEPS=1, MLTRACK_BUILD_ROOT, MLTRACK_VENV (as for scripts/test.sh).
# Exit status: 0 unless a variant crashed or the server did not hold exactly the points logged;
# a missed performance target is reported in the table, not an error.
set -euo pipefail
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=scripts/lib.sh
source "$SCRIPTS/lib.sh"

usage() {
    sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

BENCH_ARGS=()
SCALE_ROUNDS=3
ART_ARGS=(--rounds 3)
ONLY=""
while (($# > 0)); do
    case $1 in
    --rounds | --w4-rounds)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || mlt_die "$1 needs a positive number" || exit 2
        BENCH_ARGS+=("$1" "$2")
        [[ $1 == --rounds ]] && SCALE_ROUNDS=$2
        shift
        ;;
    --quick)
        BENCH_ARGS+=("$1")
        SCALE_ROUNDS=1
        ART_ARGS=(--rounds 1 --mib 256 --files 200)
        ;;
    --write-baseline) BENCH_ARGS+=("$1") ;;
    --only)
        [[ -n ${2:-} ]] || mlt_die "--only needs a list, e.g. W1,W3" || exit 2
        ONLY=$2
        BENCH_ARGS+=(--only "$2")
        shift
        ;;
    -h | --help) usage 0 ;;
    *)
        echo "unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

mlt_local_env
mkdir -p "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}"
BUILD_ROOT=$(cd "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}" && pwd -P)
BUILD_DIR=$BUILD_ROOT/bench
SERVER_DIR=""
SCALE_DIR=""

# SCALE's servers: PostgreSQL and the MLflow servers on it and on SQLite, in SCALE_DIR.
stop_scale_servers() {
    [[ -n $SCALE_DIR ]] || return 0
    local d
    for d in "$SCALE_DIR"/mlflow-*; do
        [[ -d $d ]] || continue
        "$SCRIPTS/mlflow-server.sh" stop "$d" >&2 || true
        cp "$d/server.log" "$BUILD_DIR/$(basename "$d")-server.log" 2>/dev/null || true
    done
    "$SCRIPTS/pg-server.sh" stop "$SCALE_DIR/pg" >&2 || true
    rm -rf "$SCALE_DIR"
    SCALE_DIR=""
}

# scale_bench LABEL DIR [MLFLOW SERVER ARGS...]: bench.py scale against a server of its own.
scale_bench() {
    local label=$1 dir=$2 uri
    shift 2
    uri=$("$SCRIPTS/mlflow-server.sh" start "$dir" -- "$@")
    "$MLT_PYTHON" "$MLT_SRC/bench/bench.py" scale --uri "$uri" --build "$BUILD_DIR" \
        --label "$label" --server-log "$dir/server.log" --rounds "$SCALE_ROUNDS" || return 1
    "$SCRIPTS/mlflow-server.sh" stop "$dir" >&2
}
cleanup() {
    local rc=$?
    if [[ -n $SERVER_DIR ]]; then
        "$SCRIPTS/mlflow-server.sh" stop "$SERVER_DIR" >&2 || true
        cp "$SERVER_DIR/server.log" "$BUILD_DIR/mlflow-server.log" 2>/dev/null || true
        rm -rf "$SERVER_DIR"
    fi
    stop_scale_servers
    exit "$rc"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ${MLTRACK_SKIP_DEPS:-0} != 1 ]]; then
    mlt_install_deps
fi
mlt_venv
mlt_build "$BUILD_DIR" >&2
make -C "$BUILD_DIR" -j"$(nproc)" bench >&2

# Only the hot path needs no server (SCALE and CLI alone need no shared one).
URI_ARGS=(--uri "http://127.0.0.1:1")
if [[ ${ONLY^^} != HOTPATH && ${ONLY^^} != HOT && ${ONLY^^} != SCALE ]]; then
    SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-bench-server.XXXXXX")
    URI=$("$SCRIPTS/mlflow-server.sh" start "$SERVER_DIR" -- --workers 1)
    URI_ARGS=(--uri "$URI")
fi

rc=0
if [[ ${ONLY^^} != CLI && ${ONLY^^} != SCALE && ${ONLY^^} != ART && ${ONLY^^} != RELAY ]]; then
    "$MLT_PYTHON" "$MLT_SRC/bench/bench.py" run "${URI_ARGS[@]}" --build "$BUILD_DIR" \
        --python "$MLT_PYTHON" --out "$BUILD_DIR/results.json" \
        ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} || rc=$?
fi
# `mltrack run`: its own figures (pass-through, protocol lines, start-up)
if [[ -z $ONLY || ,${ONLY^^}, == *,CLI,* ]]; then
    echo
    "$MLT_PYTHON" "$MLT_SRC/bench/bench.py" cli "${URI_ARGS[@]}" --build "$BUILD_DIR" || rc=$?
fi
# ART: artifacts through the shared server's proxy
if [[ -z $ONLY || ,${ONLY^^}, == *,ART,* ]]; then
    echo
    "$MLT_PYTHON" "$MLT_SRC/bench/bench.py" art "${URI_ARGS[@]}" --build "$BUILD_DIR" \
        --python "$MLT_PYTHON" "${ART_ARGS[@]}" || rc=$?
fi
# RELAY: live delivery from writers with no network, through a relay (the shared server)
if [[ -z $ONLY || ,${ONLY^^}, == *,RELAY,* ]]; then
    echo
    "$MLT_PYTHON" "$MLT_SRC/bench/bench.py" relay "${URI_ARGS[@]}" --build "$BUILD_DIR" || rc=$?
fi
# SCALE: many processes at once, on PostgreSQL and on SQLite (servers of its own, 4 workers each)
if [[ -z $ONLY || ,${ONLY^^}, == *,SCALE,* ]]; then
    SCALE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-bench-scale.XXXXXX")
    chmod 711 "$SCALE_DIR" # PostgreSQL runs as the user postgres when we are root
    if pg_uri=$("$SCRIPTS/pg-server.sh" start "$SCALE_DIR/pg"); then
        echo
        scale_bench "PostgreSQL, mlflow server --workers 4" "$SCALE_DIR/mlflow-pg" \
            --backend-store-uri "$pg_uri" --workers 4 || rc=1
    else
        rc=1
    fi
    echo
    scale_bench "SQLite, mlflow server --workers 4" "$SCALE_DIR/mlflow-sqlite" --workers 4 || rc=1
    stop_scale_servers
fi
exit "$rc"
