#!/usr/bin/env bash
# Logs a run and looks at it in the MLflow UI the way a person would: headless Chromium (Debian's
# chromium and chromium-driver, installed when missing) driven by tests/ui/check_ui.py (Selenium,
# pinned in scripts/lib.sh) opens the address `mltrack run` printed for the run (its metric charts
# in the "Model training" view), waits for the page to render and checks that it shows the run name
# and the loss chart, drawn; then the run's overview: a param's key and value, the metric's key and
# a tag; then the run's Artifacts tab: a PNG the child logged (`mltrack log-artifact`), drawn, and
# the child's console (logs/output-000001.log), shown. It saves full-page screenshots to
# BUILD_ROOT/ui/run-metrics.png, run-page.png, run-artifacts-image.png and run-artifacts-text.png
# and prints their paths.
# Usage: scripts/check-ui.sh [CHECK_UI ARGS...]
#   extra arguments go to tests/ui/check_ui.py, e.g. `--param not_logged=1 --timeout 20` (must fail)
# Environment:
#   MLTRACK_TEST_TRACKING_URI  the MLflow server (scripts/test.sh sets it); unset: a private server
#                              is started for the check and stopped after it
#   MLTRACK_BUILD_ROOT         build root (default: SRC/build): the programs come from its default/
#                              build (made if missing); the screenshot goes to its ui/
#   MLTRACK_SKIP_DEPS=1        do not install the Debian packages (chromium, chromium-driver)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mlt_check_setup "UI check"
BUILD_DIR=$BUILD_ROOT/default
UI_DIR=$BUILD_ROOT/ui
SCREENSHOT=$UI_DIR/run-metrics.png
OVERVIEW=$UI_DIR/run-page.png
ARTIFACTS=$UI_DIR/run-artifacts

# log_run: logs one run into a fresh experiment of $MLTRACK_TEST_TRACKING_URI with `mltrack run`
# (a param and a tag from its flags, "loss" over 5 steps from the child's mltrack:metric lines) and
# sets what the page must show: RUN_URL (as mltrack run printed it on stderr), RUN_NAME, PARAM_KEY,
# PARAM_VALUE, METRIC_KEY, TAG_KEY. The child also logs a PNG (a 64x48 gradient made here) with
# `mltrack log-artifact`, and its console is kept (mltrack run's default): IMAGE, TEXT.
log_run() {
    local exp_name out
    exp_name="ui-check-$(date +%s)-$$"
    "$MLT_PYTHON" - "$WORK/loss.png" <<'PY' || mlt_fail "cannot make the PNG"
import struct, sys, zlib
w, h = 64, 48
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 4, 128, 255 - x * 4)) for _ in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
with open(sys.argv[1], "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
    out=$(cd "$WORK" && env -u MLFLOW_EXPERIMENT_ID -u MLFLOW_RUN_ID -u MLTRACK_RUN_KEY \
        MLFLOW_TRACKING_URI="$MLTRACK_TEST_TRACKING_URI" MLTRACK_QUEUE_DIR="$WORK/queue" \
        PATH="$BUILD_DIR:$PATH" \
        timeout 120 "$BUILD_DIR/mltrack" run --experiment "$exp_name" --run-name ui-check-run \
        --param learning_rate=0.01 --tag owner=ui-check -- sh -c '
            for step in 0 1 2 3 4; do echo "mltrack:metric loss=0.$((9 - step)) step=$step"; done
            mltrack log-artifact loss.png --artifact-path plots
        ' 2>&1) || mlt_fail "mltrack run failed (exit $?): $out"
    printf '%s\n' "$out"
    RUN_URL=$(sed -n "s/^mltrack: view run 'ui-check-run' at //p" <<<"$out")
    [[ $RUN_URL == */experiments/?*/runs/?*/model-metrics?workflowType=machine_learning ]] ||
        mlt_fail "mltrack run printed no address for the run: $out"
    RUN_NAME=ui-check-run PARAM_KEY=learning_rate PARAM_VALUE=0.01 METRIC_KEY=loss TAG_KEY=owner
    IMAGE=plots/loss.png TEXT="logs/output-000001.log=mltrack:metric loss=0.5 step=4"
}

if [[ ${MLTRACK_SKIP_DEPS:-0} == 1 ]]; then
    for f in /usr/bin/chromium /usr/bin/chromedriver; do
        [[ -x $f ]] || mlt_fail "$f is missing (MLTRACK_SKIP_DEPS=1: install ${MLT_UI_DEB_PACKAGES[*]})"
    done
else
    mlt_install_ui_deps
fi
mlt_venv_ui
mlt_venv_vars
mlt_own_server
[[ -x $BUILD_DIR/mltrack ]] || mlt_build "$BUILD_DIR"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-ui-check.XXXXXX")
log_run
mkdir -p "$UI_DIR"
rm -f "$SCREENSHOT"
rc=0
"$MLT_PYTHON" -B "$MLT_SRC/tests/ui/check_ui.py" --url "$RUN_URL" --run-name "$RUN_NAME" \
    --chart "$METRIC_KEY" --screenshot "$SCREENSHOT" \
    --param "$PARAM_KEY=$PARAM_VALUE" --metric "$METRIC_KEY" --tag "$TAG_KEY" \
    --overview-screenshot "$OVERVIEW" --image "$IMAGE" --text "$TEXT" \
    --artifacts-screenshot "$ARTIFACTS" "$@" ||
    rc=$?
case $rc in
0) ;;
1) mlt_fail "the run's pages do not show what was logged (see above; screenshots in $UI_DIR)" ;;
*) mlt_fail "tests/ui/check_ui.py could not check the page (exit $rc)" ;;
esac
echo "UI check passed; screenshots: $SCREENSHOT, $OVERVIEW, $ARTIFACTS-image.png, $ARTIFACTS-text.png"
