#!/usr/bin/env bash
# Runs every test of mltrack on a fresh machine, from any directory:
#   Debian packages and a Python venv with the pinned MLflow server (installed if missing), a normal
#   build with its unit tests and a callgrind gate on the logging hot path, integration tests
#   against a real local MLflow server, 16 processes x 4 threads logging at once into an MLflow
#   server on PostgreSQL (scale), an install into a temporary prefix used through pkg-config,
#   the run page in the MLflow UI checked in headless Chromium, the same tests under
#   AddressSanitizer+UBSan (and the fuzz corpora replayed) and under valgrind, and
#   `make distcheck`.
# Usage: scripts/test.sh [--quick]
#   --quick              skip the sanitizer, valgrind and distcheck stages
# Environment:
#   MLTRACK_SKIP_DEPS=1  do not check/install Debian packages
#   MLTRACK_BUILD_ROOT   where the build directories go (default: SRC/build; default/, asan/, ...,
#                        install-build/, install-prefix/, and ui/run-page.png, the UI's screenshot)
#   MLTRACK_VENV         the Python venv (default: ${XDG_CACHE_HOME:-~/.cache}/mltrack/venv)
#   MLTRACK_SERVER_ARGS  extra `mlflow server` arguments, split on spaces (e.g. "--workers 2")
#   DISTCHECK_CONFIGURE_FLAGS  configure flags for distcheck (default: --enable-werror)
# Every stage runs even after a failure; the summary at the end has one line per stage and a closing
# line "N passed, N failed"; the exit status is non-zero if any stage failed.
set -euo pipefail
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=scripts/lib.sh
source "$SCRIPTS/lib.sh"

QUICK=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *)
        echo "unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

mlt_local_env
mkdir -p "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}"
BUILD_ROOT=$(cd "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}" && pwd -P)
DEFAULT_DIR=$BUILD_ROOT/default
ASAN_DIR=$BUILD_ROOT/asan
TSAN_DIR=$BUILD_ROOT/tsan
NPROC=$(nproc)
SERVER_DIR=""

# ---- stage bookkeeping -------------------------------------------------------------------------
STAGE_NAMES=()
STAGE_RESULTS=()
STAGE_NOTES=()
declare -A RESULT_OF=()
N_PASS=0
N_FAIL=0
TOTAL_STAGES=20
STAGE_NO=0

header() {
    STAGE_NO=$((STAGE_NO + 1))
    printf '\n==== [%d/%d] %s ====\n' "$STAGE_NO" "$TOTAL_STAGES" "$*"
}

record() { # NAME RESULT NOTE
    STAGE_NAMES+=("$1")
    STAGE_RESULTS+=("$2")
    STAGE_NOTES+=("$3")
    RESULT_OF[$1]=$2
    case $2 in
    PASS) N_PASS=$((N_PASS + 1)) ;;
    FAIL) N_FAIL=$((N_FAIL + 1)) ;;
    esac
    printf -- '---- %s: %s%s\n' "$1" "$2" "${3:+ ($3)}"
}

# stage NAME "DESCRIPTION" NEEDS CMD [ARGS...]: run CMD in a subshell with errexit on; NEEDS is a
# space-separated list of stages that must have passed (else this one fails without running).
stage() {
    local name=$1 desc=$2 needs=$3 dep rc start
    shift 3
    header "$name: $desc"
    for dep in $needs; do
        if [[ ${RESULT_OF[$dep]:-} != PASS ]]; then
            record "$name" FAIL "not run: stage '$dep' did not pass"
            return 0
        fi
    done
    start=$SECONDS
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
        record "$name" PASS "$((SECONDS - start)) s"
    else
        record "$name" FAIL "exit $rc after $((SECONDS - start)) s"
    fi
}

# stage_bg NAME "DESCRIPTION" NEEDS CMD [ARGS...]: as stage, but started in the background with its
# output kept in a log; stage_wait NAME prints the log and records the result. For a stage that
# keeps one core busy next to another that does (valgrind's unit tests next to its integration
# tests): a full run stays within CI's time.
declare -A BG_PID=() BG_LOG=() BG_DESC=() BG_START=()
stage_bg() {
    local name=$1 desc=$2 needs=$3 dep
    shift 3
    for dep in $needs; do
        if [[ ${RESULT_OF[$dep]:-} != PASS ]]; then
            header "$name: $desc"
            record "$name" FAIL "not run: stage '$dep' did not pass"
            return 0
        fi
    done
    BG_LOG[$name]=$BUILD_ROOT/stage-$name.log
    BG_DESC[$name]=$desc
    BG_START[$name]=$SECONDS
    rm -f "$BUILD_ROOT/stage-$name.done"
    (
        rc=0
        (
            set -e
            "$@"
        ) >"${BG_LOG[$name]}" 2>&1 || rc=$?
        : >"$BUILD_ROOT/stage-$name.done" # for after_bg: a sibling cannot wait for it
        exit "$rc"
    ) &
    BG_PID[$name]=$!
    printf '\n(stage %s started in the background: its output follows when it ends)\n' "$name"
}

# after_bg NAME CMD [ARGS...]: runs CMD once the background stage NAME has ended (for a stage_bg
# that takes the core another one leaves free)
after_bg() {
    local name=$1 waited=$SECONDS
    shift
    if [[ -n ${BG_PID[$name]:-} ]]; then
        while [[ ! -e $BUILD_ROOT/stage-$name.done ]]; do
            sleep 2
        done
    fi
    echo "(started once stage $name had ended, $((SECONDS - waited)) s later)"
    "$@"
}

stage_wait() { # NAME
    local name=$1 rc
    [[ -n ${BG_PID[$name]:-} ]] || return 0
    set +e
    wait "${BG_PID[$name]}"
    rc=$?
    set -e
    header "$name: ${BG_DESC[$name]} (ran in the background)"
    cat "${BG_LOG[$name]}"
    if ((rc == 0)); then
        record "$name" PASS "$((SECONDS - BG_START[$name])) s, in the background"
    else
        record "$name" FAIL "exit $rc after $((SECONDS - BG_START[$name])) s, in the background"
    fi
}

skip() { # NAME "DESCRIPTION" REASON
    header "$1: $2"
    echo "skipped: $3"
    record "$1" SKIP "$3"
}

# ---- stage bodies --------------------------------------------------------------------------------
show_failed_test_logs() { # BUILD_DIR
    local trs log shown=0
    for trs in "$1"/tests/*.trs; do
        [[ -e $trs ]] || continue
        if grep -qE '^:test-result: (FAIL|ERROR|XPASS)' "$trs"; then
            log=${trs%.trs}.log
            printf '\n---- %s (last 400 lines) ----\n' "$log"
            tail -n 400 "$log" || true
            shown=1
        fi
    done
    ((shown)) || echo "(no failing test log found under $1/tests: see the make output above)"
}

make_check() { # BUILD_DIR TARGET
    if ! make -C "$1" -j"$NPROC" "$2"; then
        show_failed_test_logs "$1"
        return 1
    fi
}

make_check_serial() { # BUILD_DIR TARGET
    if ! make -C "$1" -j1 "$2"; then
        show_failed_test_logs "$1"
        return 1
    fi
}

start_server() {
    local args=()
    read -r -a args <<<"${MLTRACK_SERVER_ARGS:-}"
    "$SCRIPTS/mlflow-server.sh" start "$SERVER_DIR" ${args[@]+"${args[@]}"} >/dev/null
}

# Tests may stop and restart the server; make sure it is up (same port) before each test stage.
ensure_server() {
    "$SCRIPTS/mlflow-server.sh" status "$SERVER_DIR" >/dev/null 2>&1 && return 0
    echo "the MLflow server of $SERVER_DIR is down: restarting it on port $(<"$SERVER_DIR/port")"
    local args=()
    read -r -a args <<<"${MLTRACK_SERVER_ARGS:-}"
    "$SCRIPTS/mlflow-server.sh" stop "$SERVER_DIR"
    "$SCRIPTS/mlflow-server.sh" start "$SERVER_DIR" "$(<"$SERVER_DIR/port")" \
        ${args[@]+"${args[@]}"} >/dev/null
}

integration() { # BUILD_DIR LABEL
    if ! compgen -G "$MLT_SRC/tests/integration/test_*.py" >/dev/null; then
        echo "no integration tests found (tests/integration/test_*.py)" >&2
        return 1
    fi
    ensure_server
    echo "tracking server: $MLTRACK_TEST_TRACKING_URI${MLTRACK_TEST_WRAPPER:+; wrapper: $MLTRACK_TEST_WRAPPER}"
    # the fault tests' figures (docs/reliability.md), printed at the end
    export MLTRACK_RELIABILITY_LOG=$1/reliability-$2.jsonl
    # which run of the integration tests this is (default, asan, tsan, valgrind): the largest
    # artifacts (1 GiB) go in the default one only
    export MLTRACK_TEST_LABEL=$2
    rm -f "$MLTRACK_RELIABILITY_LOG"
    make -C "$1" -j"$NPROC" check-integration PYTHON_FOR_TESTS="$MLT_PYTHON" \
        MLTRACK_TEST_TRACKING_URI="$MLTRACK_TEST_TRACKING_URI"
    echo "the fault tests' figures (scripts/reliability-report.py $1 $MLTRACK_RELIABILITY_LOG):"
    "$MLT_PYTHON" "$MLT_SRC/scripts/reliability-report.py" "$1" "$MLTRACK_RELIABILITY_LOG"
}

sanitizer_env() {
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
}

asan_unit() {
    sanitizer_env
    make_check "$ASAN_DIR" check
}

fuzz_replay() {
    sanitizer_env
    make -C "$ASAN_DIR" -j"$NPROC" check-fuzz-corpus
}

asan_integration() {
    sanitizer_env
    integration "$ASAN_DIR" asan
}

tsan_env() {
    # second_deadlock_stack helps reading reports; halt so that a race fails the stage
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
}

tsan_unit() {
    tsan_env
    make_check "$TSAN_DIR" check
}

tsan_integration() {
    tsan_env
    integration "$TSAN_DIR" tsan
}

valgrind_integration() {
    export MLTRACK_TEST_WRAPPER="valgrind --error-exitcode=99 --leak-check=full \
--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --quiet \
--suppressions=$MLT_SRC/tests/valgrind.supp"
    integration "$DEFAULT_DIR" valgrind
}

scale_check() {
    MLTRACK_BUILD_ROOT=$BUILD_ROOT "$SCRIPTS/check-scale.sh"
}

install_check() {
    ensure_server
    MLTRACK_BUILD_ROOT=$BUILD_ROOT "$SCRIPTS/check-install.sh"
}

ui_check() {
    ensure_server
    MLTRACK_BUILD_ROOT=$BUILD_ROOT "$SCRIPTS/check-ui.sh"
}

hotpath_gate() {
    make -C "$DEFAULT_DIR" bench/hotpath
    "$MLT_PYTHON" "$MLT_SRC/bench/bench.py" hotpath --build "$DEFAULT_DIR" --check 5
}

distcheck() {
    make -C "$DEFAULT_DIR" -j"$NPROC" distcheck \
        DISTCHECK_CONFIGURE_FLAGS="${DISTCHECK_CONFIGURE_FLAGS:---enable-werror}"
}

stop_server() {
    if [[ -n $SERVER_DIR && -d $SERVER_DIR ]]; then
        "$SCRIPTS/mlflow-server.sh" stop "$SERVER_DIR" || true
        # keep the server's log for a post-mortem; the rest goes
        cp "$SERVER_DIR/server.log" "$BUILD_ROOT/mlflow-server.log" 2>/dev/null || true
        rm -rf "$SERVER_DIR"
    fi
    SERVER_DIR=""
}

cleanup() {
    local rc=$?
    stop_server
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the stages ----------------------------------------------------------------------------------
echo "mltrack: source $MLT_SRC, builds in $BUILD_ROOT$( ((QUICK)) && echo ' (--quick)')"

if [[ ${MLTRACK_SKIP_DEPS:-0} == 1 ]]; then
    skip deps "Debian packages" "MLTRACK_SKIP_DEPS=1"
else
    stage deps "Debian packages (install the missing ones)" "" mlt_install_deps
fi
stage venv "Python venv with mlflow==$MLT_MLFLOW_VERSION and pytest; moto for S3" "" mlt_venv_s3
mlt_venv_vars # the stage ran in a subshell: set MLT_PYTHON/MLT_MLFLOW here too

stage build "configure and build (default) in $DEFAULT_DIR" "" mlt_build "$DEFAULT_DIR"
stage unit "unit tests: make check (default build)" "build" make_check "$DEFAULT_DIR" check
stage hotpath "callgrind instructions per mlt_log_metric(_key) call within 5% of \
bench/hotpath-baseline.txt" "build" hotpath_gate

SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-test-server.XXXXXX")
stage server "start a local MLflow server (state in $SERVER_DIR)" "venv" start_server
if [[ -f $SERVER_DIR/uri ]]; then
    MLTRACK_TEST_TRACKING_URI=$(<"$SERVER_DIR/uri")
else
    MLTRACK_TEST_TRACKING_URI=""
fi
export MLTRACK_TEST_TRACKING_URI MLTRACK_TEST_SERVER_DIR=$SERVER_DIR

stage integration "integration tests: make check-integration (default build)" "build server" \
    integration "$DEFAULT_DIR" default
stage scale "16 processes x 4 threads log at once into an MLflow server on PostgreSQL (--workers 4), \
directly and through 503s and cut answers; the server holds exactly the ledgers" "build venv" scale_check
stage install "make install into a temporary prefix; a program built with pkg-config against it \
logs a run" "build server" install_check
stage ui "the run page in the MLflow UI, in headless Chromium (screenshot in $BUILD_ROOT/ui)" \
    "build server" ui_check

if ((QUICK)); then
    skip asan-build "configure and build with ASan+UBSan" "--quick"
    skip asan-unit "unit tests under ASan+UBSan" "--quick"
    skip fuzz-replay "the fuzz corpora replayed under ASan+UBSan" "--quick"
    skip asan-integration "integration tests under ASan+UBSan" "--quick"
    skip tsan-build "configure and build with ThreadSanitizer" "--quick"
    skip tsan-unit "unit tests under ThreadSanitizer" "--quick"
    skip tsan-integration "integration tests under ThreadSanitizer" "--quick"
    skip valgrind-unit "unit tests under valgrind" "--quick"
    skip valgrind-integration "integration tests under valgrind" "--quick"
    skip distcheck "make distcheck" "--quick"
else
    stage asan-build "configure and build with ASan+UBSan in $ASAN_DIR" "" \
        mlt_build "$ASAN_DIR" --enable-asan --enable-ubsan
    stage asan-unit "unit tests under ASan+UBSan: make check" "asan-build" asan_unit
    stage fuzz-replay "the fuzz corpora (tests/fuzz/corpus) replayed under ASan+UBSan: make \
check-fuzz-corpus" "asan-build" fuzz_replay
    stage asan-integration "integration tests under ASan+UBSan" "asan-build server" asan_integration
    stage tsan-build "configure and build with ThreadSanitizer in $TSAN_DIR" "" \
        mlt_build "$TSAN_DIR" --enable-tsan
    stage tsan-integration "integration tests under ThreadSanitizer" "tsan-build server" \
        tsan_integration
    # one test program at a time (-j1), next to the integration tests (valgrind runs a process's
    # threads one at a time: each keeps about one core busy)
    stage_bg valgrind-unit "unit tests under valgrind: make check-valgrind (default build)" "build" \
        make_check_serial "$DEFAULT_DIR" check-valgrind
    # and then, one after the other on the same core, the unit tests under TSan and distcheck:
    # valgrind's unit tests end minutes before its integration tests do
    stage_bg tsan-unit "unit tests under ThreadSanitizer: make check, once valgrind's unit tests \
have ended" "tsan-build" after_bg valgrind-unit tsan_unit
    stage_bg distcheck "make distcheck (default build), once the TSan unit tests have ended" \
        "build" after_bg tsan-unit distcheck
    stage valgrind-integration "integration tests under valgrind (default build)" "build server" \
        valgrind_integration
    stage_wait valgrind-unit
    stage_wait tsan-unit
    stage_wait distcheck
fi

stop_server # before the summary, so that the closing line is the last one printed
echo "(the MLflow server's log is kept in $BUILD_ROOT/mlflow-server.log)"

# ---- summary -------------------------------------------------------------------------------------
printf '\n==== summary ====\n'
for i in "${!STAGE_NAMES[@]}"; do
    printf '%-22s %s%s\n' "${STAGE_NAMES[$i]}" "${STAGE_RESULTS[$i]}" \
        "${STAGE_NOTES[$i]:+  (${STAGE_NOTES[$i]})}"
done
printf '%d passed, %d failed\n' "$N_PASS" "$N_FAIL"
((N_FAIL == 0))
