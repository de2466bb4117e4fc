#!/usr/bin/env bash
# Installs mltrack into a fresh prefix and uses it the way a user of the package would:
#   - configures and builds BUILD_ROOT/install-build with --prefix=BUILD_ROOT/install-prefix (emptied
#     first) and runs `make install`;
#   - checks that bin/mltrack --version runs, that include/mltrack.h, lib/pkgconfig/mltrack.pc and
#     share/man/man1/mltrack.1 are installed, that `man` finds the page and groff renders it with no
#     warning;
#   - copies examples/train_model.c into an empty directory outside the tree, compiles it with
#     exactly `cc prog.c $(pkg-config --cflags --libs mltrack)` (PKG_CONFIG_PATH=PREFIX/lib/pkgconfig),
#     runs it with LD_LIBRARY_PATH=PREFIX/lib and a private queue against the MLflow server, and
#     reads the run back over the REST API: name, status, params and the accuracy metric's full
#     history.
# Usage: scripts/check-install.sh
# Environment:
#   MLTRACK_TEST_TRACKING_URI  the MLflow server (scripts/test.sh sets it); unset: a private server
#                              is started for the check and stopped after it
#   MLTRACK_BUILD_ROOT         where install-build/ and install-prefix/ go (default: SRC/build)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mlt_check_setup "install check"
BUILD_DIR=$BUILD_ROOT/install-build
PREFIX=$BUILD_ROOT/install-prefix

mlt_venv_vars
[[ -x $MLT_PYTHON ]] || mlt_venv
mlt_own_server
URI=${MLTRACK_TEST_TRACKING_URI%/}

# ---- install ----
mlt_build "$BUILD_DIR" --prefix="$PREFIX"
rm -rf "$PREFIX"
make -C "$BUILD_DIR" install >"$BUILD_DIR/install.log" 2>&1 ||
    { tail -n 40 "$BUILD_DIR/install.log" >&2; mlt_fail "make install failed (log: $BUILD_DIR/install.log)"; }
echo "installed into $PREFIX"

# ---- what is installed ----
for f in bin/mltrack include/mltrack.h include/mltrack.hpp lib/pkgconfig/mltrack.pc \
    share/man/man1/mltrack.1; do
    [[ -f $PREFIX/$f ]] || mlt_fail "$PREFIX/$f is not installed"
    echo "ok: $f"
done
compgen -G "$PREFIX/lib/libmltrack.so*" >/dev/null || mlt_fail "no $PREFIX/lib/libmltrack.so*"

version=$("$PREFIX/bin/mltrack" --version) ||
    mlt_fail "$PREFIX/bin/mltrack --version failed"
[[ -n $version ]] || mlt_fail "mltrack --version printed nothing"
echo "ok: mltrack --version: $version"

export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
pcver=$(pkg-config --modversion mltrack) || mlt_fail "pkg-config does not find mltrack in $PKG_CONFIG_PATH"
[[ $version == *"$pcver"* ]] || mlt_fail "mltrack --version ($version) does not name the .pc version $pcver"
echo "ok: pkg-config --modversion mltrack: $pcver"

page=$PREFIX/share/man/man1/mltrack.1
found=$(MANPATH=$PREFIX/share/man man -w mltrack) || mlt_fail "man -w mltrack finds no page under $PREFIX"
[[ $found == "$page"* ]] || mlt_fail "man -w mltrack found $found, not $page"
warnings=$(groff -ww -man -z "$page" 2>&1) || mlt_fail "groff failed on $page: $warnings"
[[ -z $warnings ]] || mlt_fail "groff warns on $page:"$'\n'"$warnings"
rendered=$(MANWIDTH=80 man --warnings -l "$page" 2>"$BUILD_DIR/man.err") || mlt_fail "man -l $page failed"
[[ ! -s $BUILD_DIR/man.err ]] || mlt_fail "man -l $page warns:"$'\n'"$(<"$BUILD_DIR/man.err")"
grep -q '^SYNOPSIS' <<<"$rendered" || mlt_fail "man -l $page rendered no SYNOPSIS"
echo "ok: man page found by man -w, renders with no warning ($(wc -l <<<"$rendered") lines)"

# ---- a program built against the installed package, outside the tree ----
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-install-check.XXXXXX")
cp "$MLT_SRC/examples/train_model.c" "$WORK/prog.c"
cd "$WORK"
# shellcheck disable=SC2046 # the flags are meant to be split
cc prog.c $(pkg-config --cflags --libs mltrack) || mlt_fail "cc prog.c \$(pkg-config --cflags --libs mltrack) failed"
lib=$(LD_LIBRARY_PATH=$PREFIX/lib ldd ./a.out | awk '$1 ~ /^libmltrack\.so/ { print $3 }')
[[ $lib == "$PREFIX/lib/"* ]] || mlt_fail "a.out loads libmltrack from '$lib', not from $PREFIX/lib"
echo "ok: cc prog.c \$(pkg-config --cflags --libs mltrack); a.out loads $lib"

exp_name="install-check-$(date +%s)-$$"
echo "running a.out against $URI (experiment $exp_name)"
set +e
env -u MLFLOW_EXPERIMENT_ID -u MLFLOW_RUN_ID -u MLTRACK_RUN_KEY \
    MLFLOW_TRACKING_URI="$URI" MLFLOW_EXPERIMENT_NAME="$exp_name" MLTRACK_QUEUE_DIR="$WORK/queue" \
    LD_LIBRARY_PATH="$PREFIX/lib" timeout 120 ./a.out >"$WORK/out.txt" 2>"$WORK/err.txt"
rc=$?
set -e
cat "$WORK/out.txt"
cat "$WORK/err.txt" >&2
((rc == 0)) || mlt_fail "a.out exited $rc"
run_id=$(sed -n 's/^run id: //p' "$WORK/out.txt")
[[ -n $run_id ]] || mlt_fail "a.out printed no run id"

# ---- read the run back, independently of the library ----
"$MLT_PYTHON" -B - "$MLT_SRC/tests/integration" "$URI" "$exp_name" "$run_id" <<'EOF'
import sys

sys.path.insert(0, sys.argv[1])
from mlflow_read import MlflowReader, same_value  # noqa: E402

uri, exp_name, run_id = sys.argv[2:5]
reader = MlflowReader(uri)
exp, runs = reader.runs_of_experiment_named(exp_name)
if exp is None or [r["info"]["run_id"] for r in runs] != [run_id]:
    sys.exit(f"install check: want exactly run {run_id} in experiment {exp_name}, found "
             f"{[r['info']['run_id'] for r in runs]}")
snap = reader.snapshot(run_id)
problems = []
if snap["run_name"] != "train_model":
    problems.append(f"run name {snap['run_name']!r}, want 'train_model'")
if snap["status"] != "FINISHED":
    problems.append(f"status {snap['status']!r}, want FINISHED")
want_params = {"epochs": "10", "learning_rate": "0.01"}
if snap["params"] != want_params:
    problems.append(f"params {snap['params']}, want {want_params}")
want, accuracy = [], 0.5
for epoch in range(10):  # as examples/train_model.c computes it
    accuracy += (1.0 - accuracy) * 0.01 * 10.0
    want.append((epoch, accuracy))
got = [(step, value) for step, _ts, value in snap["metrics"].get("accuracy", [])]
if len(got) != len(want) or not all(
    gs == ws and same_value(gv, wv) for (gs, gv), (ws, wv) in zip(got, want)
):
    problems.append(f"accuracy history {got}, want {want}")
if problems:
    sys.exit("install check: the run read back is wrong:\n  " + "\n  ".join(problems))
print(f"ok: run {run_id} read back: name train_model, FINISHED, params epochs=10 "
      f"learning_rate=0.01, accuracy at steps 0-9 exactly as logged")
EOF

# ---- a C++ program against the installed package (mltrack.hpp) ----
cp "$MLT_SRC/examples/train_cpp.cpp" "$WORK/prog.cpp"
# shellcheck disable=SC2046 # the flags are meant to be split
c++ -o prog-cpp prog.cpp $(pkg-config --cflags --libs mltrack) ||
    mlt_fail "c++ prog.cpp \$(pkg-config --cflags --libs mltrack) failed"
exp_cpp="$exp_name-cpp"
LD_LIBRARY_PATH="$PREFIX/lib" MLFLOW_TRACKING_URI="$URI" MLFLOW_EXPERIMENT_NAME="$exp_cpp" \
    MLTRACK_QUEUE_DIR="$WORK/queue" timeout 120 ./prog-cpp >"$WORK/out-cpp.txt" ||
    mlt_fail "the C++ program exited $?"
"$MLT_PYTHON" -B - "$MLT_SRC/tests/integration" "$URI" "$exp_cpp" <<'EOF'
import sys

sys.path.insert(0, sys.argv[1])
from mlflow_read import MlflowReader  # noqa: E402
from test_cpp import check_runs  # noqa: E402

check_runs(MlflowReader(sys.argv[2]), sys.argv[3])
print("ok: c++ prog.cpp $(pkg-config --cflags --libs mltrack): its five runs read back exactly")
EOF
echo "install check passed"
