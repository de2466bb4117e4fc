#!/usr/bin/env bash
# Fuzzes the parsers of outside input with libFuzzer (clang -fsanitize=fuzzer,address,undefined):
#   fuzz_answer    the server's answers (JSON, error and non-JSON bodies, Retry-After)
#   fuzz_journal   a journal directory as found after a crash or tampering
#   fuzz_protocol  the `mltrack run` line protocol (splitter and parser)
#   fuzz_options   options by name and value, and from the environment
#   fuzz_lease     a journal's delivery lease file (parse, and format of what was parsed)
# Installs clang and libFuzzer if missing (Debian), builds the library with coverage and the
# sanitizers in BUILD_ROOT/fuzz, and runs each target for a set time, seeded with its committed
# corpus tests/fuzz/corpus/TARGET/. New inputs go to BUILD_ROOT/fuzz/corpus/TARGET/ (the
# committed corpus is only written with --merge); findings go to BUILD_ROOT/fuzz/findings/TARGET/.
# Exits non-zero on any finding (crash, leak, timeout, out of memory), printing its input's path.
# Usage: scripts/fuzz.sh [--seconds N] [--only TARGET] [--merge] [--build-only]
#   --seconds N    how long each target runs (default 60)
#   --only TARGET  run one target (fuzz_journal or journal; repeat for several)
#   --merge        then add the new inputs that reach new code to tests/fuzz/corpus/TARGET/
#                  (libFuzzer -merge=1: the committed seeds stay, nothing redundant is added)
#   --build-only   build the targets, run nothing
# Environment:
#   MLTRACK_SKIP_DEPS=1  do not check/install Debian packages
#   MLTRACK_BUILD_ROOT   where build directories go (default: SRC/build)
#   FUZZ_ARGS            more libFuzzer arguments, split on spaces (e.g. "-max_len=8192")
# A finding is replayed with: BUILD_ROOT/fuzz/TARGET FILE (or, with any compiler, the replay
# build: make tests/fuzz/TARGET && tests/fuzz/TARGET FILE).
set -euo pipefail
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=scripts/lib.sh
source "$SCRIPTS/lib.sh"

ALL_TARGETS=(fuzz_answer fuzz_journal fuzz_protocol fuzz_options fuzz_lease)
SECONDS_EACH=60
MERGE=0
BUILD_ONLY=0
TARGETS=()
while (($#)); do
    case $1 in
    --seconds)
        [[ ${2:-} =~ ^[0-9]+$ && $2 -gt 0 ]] || {
            echo "--seconds needs a positive number" >&2
            exit 2
        }
        SECONDS_EACH=$2
        shift
        ;;
    --only)
        t=${2:-}
        [[ $t == fuzz_* ]] || t=fuzz_$t
        [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || {
            echo "unknown target '${2:-}' (one of: ${ALL_TARGETS[*]})" >&2
            exit 2
        }
        TARGETS+=("$t")
        shift
        ;;
    --merge) MERGE=1 ;;
    --build-only) BUILD_ONLY=1 ;;
    -h | --help)
        sed -n '2,26s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *)
        echo "unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")

mkdir -p "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}"
BUILD_ROOT=$(cd "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}" && pwd -P)
FUZZ_DIR=$BUILD_ROOT/fuzz
SCRATCH=""
cleanup() {
    local rc=$?
    [[ -n $SCRATCH ]] && rm -rf "$SCRATCH"
    exit "$rc"
}
trap cleanup EXIT

# ---- clang and libFuzzer -------------------------------------------------------------------------
install_deps() {
    [[ ${MLTRACK_SKIP_DEPS:-0} == 1 ]] && return 0
    mlt_install_deps
    mlt_install_debs clang
    # libFuzzer and the sanitizer runtimes, and llvm-symbolizer for readable stack traces, come
    # in packages named after clang's major version (14 on Debian 12)
    local v
    v=$(clang -dumpversion | cut -d. -f1)
    mlt_install_debs "libclang-rt-$v-dev" "llvm-$v"
}

# A file that libFuzzer can link, or a message saying what is missing.
check_clang() {
    command -v clang >/dev/null 2>&1 || mlt_die "clang not found (install Debian's clang)"
    local t
    t=$(mktemp -d)
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$t/t.c"
    if ! clang -fsanitize=fuzzer,address,undefined "$t/t.c" -o "$t/t" >"$t/log" 2>&1; then
        cat "$t/log" >&2
        rm -rf "$t"
        mlt_die "clang cannot link a libFuzzer target (is libclang-rt-N-dev installed?)"
        return 1
    fi
    rm -rf "$t"
}

# ---- the build -----------------------------------------------------------------------------------
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
LIB_CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $SAN"

# The library, instrumented for coverage, in FUZZ_DIR (configured once; again when its flags
# change); then each target linked with libFuzzer.
build() {
    mlt_autoreconf
    mkdir -p "$FUZZ_DIR"
    local want have=""
    want="CC=clang CFLAGS=$LIB_CFLAGS"
    [[ -f $FUZZ_DIR/.mlt-fuzz-configure ]] && have=$(<"$FUZZ_DIR/.mlt-fuzz-configure")
    if [[ ! -f $FUZZ_DIR/Makefile || $have != "$want" ]]; then
        rm -f "$FUZZ_DIR/.mlt-fuzz-configure"
        mlt_log "configuring $FUZZ_DIR with clang"
        (cd "$FUZZ_DIR" && "$MLT_SRC/configure" CC=clang CFLAGS="$LIB_CFLAGS" >configure.log) || {
            tail -n 30 "$FUZZ_DIR/configure.log" >&2
            return 1
        }
        printf '%s\n' "$want" >"$FUZZ_DIR/.mlt-fuzz-configure"
    fi
    mlt_log "building the library in $FUZZ_DIR"
    make -C "$FUZZ_DIR" -j"$(nproc)" libmltrack_internal.la WARN_CFLAGS= >/dev/null
    local deps t extra
    # shellcheck disable=SC2207
    deps=($(pkg-config --cflags --libs libcurl libcjson libcrypto))
    for t in "${TARGETS[@]}"; do
        extra=()
        [[ $t == fuzz_protocol ]] && extra=("$MLT_SRC/src/cli/protocol.c")
        mlt_log "linking $FUZZ_DIR/$t"
        # shellcheck disable=SC2086
        clang -std=c11 -D_GNU_SOURCE -Wno-string-plus-int -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer $SAN \
            -I"$FUZZ_DIR" -I"$MLT_SRC/include" -I"$MLT_SRC/src" -I"$MLT_SRC/tests/fuzz" \
            "$MLT_SRC/tests/fuzz/$t.c" "$MLT_SRC/tests/fuzz/fuzz_util.c" ${extra[@]+"${extra[@]}"} \
            "$FUZZ_DIR/.libs/libmltrack_internal.a" "${deps[@]}" -lm -pthread -o "$FUZZ_DIR/$t"
    done
}

# ---- running -------------------------------------------------------------------------------------
# run TARGET: fuzzes it for SECONDS_EACH; returns non-zero on a finding, whose input is printed.
run() {
    local t=$1 corpus=$FUZZ_DIR/corpus/$1 findings=$FUZZ_DIR/findings/$1 log
    local seeds=$MLT_SRC/tests/fuzz/corpus/$1
    mkdir -p "$corpus" "$findings"
    log=$FUZZ_DIR/$t.log
    local args=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048
        -artifact_prefix="$findings/" -print_final_stats=1)
    [[ -f $MLT_SRC/tests/fuzz/$t.dict ]] && args+=(-dict="$MLT_SRC/tests/fuzz/$t.dict")
    local extra=()
    read -r -a extra <<<"${FUZZ_ARGS:-}"
    mlt_log "fuzzing $t for $SECONDS_EACH s (log: $log)"
    local rc=0
    (cd "$findings" && "$FUZZ_DIR/$t" "${args[@]}" ${extra[@]+"${extra[@]}"} "$corpus" \
        "$seeds") >"$log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::)' "$log" | sed "s/^/[$t] /" >&2 || true
    if ((rc != 0)); then
        echo "---- $t: finding (exit $rc); the end of $log:" >&2
        tail -n 60 "$log" >&2
        local unit
        unit=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //')
        echo "FINDING in $t: input ${unit:-(not written: see $log)}" >&2
        return 1
    fi
    if ((MERGE)); then
        mlt_log "merging new inputs of $t into $seeds"
        "$FUZZ_DIR/$t" -merge=1 -timeout=10 -rss_limit_mb=2048 "$seeds" "$corpus" >"$FUZZ_DIR/$t.merge.log" 2>&1 || {
            tail -n 30 "$FUZZ_DIR/$t.merge.log" >&2
            return 1
        }
    fi
}

install_deps
check_clang
build
((BUILD_ONLY)) && exit 0

# the journal target writes and removes a directory per input: in memory when possible
if [[ -d /dev/shm && -w /dev/shm ]]; then
    SCRATCH=$(mktemp -d /dev/shm/mltrack-fuzz.XXXXXX)
else
    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-fuzz.XXXXXX")
fi
export TMPDIR=$SCRATCH
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
v=$(clang -dumpversion | cut -d. -f1)
if [[ -z ${ASAN_SYMBOLIZER_PATH:-} && -x /usr/bin/llvm-symbolizer-$v ]]; then
    export ASAN_SYMBOLIZER_PATH=/usr/bin/llvm-symbolizer-$v
fi

failed=()
for t in "${TARGETS[@]}"; do
    run "$t" || failed+=("$t")
done
if ((${#failed[@]})); then
    echo "fuzz: findings in: ${failed[*]} (inputs in $FUZZ_DIR/findings/)" >&2
    exit 1
fi
mlt_log "fuzz: ${TARGETS[*]}: no finding in $SECONDS_EACH s each"
