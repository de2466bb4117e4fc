#!/usr/bin/env bash
# The demo, from any directory: installs what is missing (Debian packages, a Python venv with the
# pinned MLflow server), builds, starts a local MLflow server on 127.0.0.1 (left running in the
# background; an already running demo server is reused) and runs examples/train_model against it,
# which prints the run's MLflow UI URL.
# Environment:
#   MLTRACK_SKIP_DEPS=1     do not check/install Debian packages
#   MLTRACK_BUILD_ROOT      build directories (default: SRC/build; the demo uses default/)
#   MLTRACK_DEMO_DIR        the demo server's state (default: ~/.local/state/mltrack/demo-server)
#   MLFLOW_EXPERIMENT_NAME  the experiment (default: mltrack-demo)
set -euo pipefail
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=scripts/lib.sh
source "$SCRIPTS/lib.sh"

mlt_local_env
if [[ ${MLTRACK_SKIP_DEPS:-0} != 1 ]]; then
    mlt_install_deps
fi
mlt_venv
BUILD_DIR=${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}/default
mlt_build "$BUILD_DIR"

DEMO_DIR=${MLTRACK_DEMO_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/mltrack/demo-server}
mkdir -p "$DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd -P)
if uri=$("$SCRIPTS/mlflow-server.sh" status "$DEMO_DIR"); then
    mlt_log "reusing the running demo MLflow server at $uri"
else
    uri=$("$SCRIPTS/mlflow-server.sh" start "$DEMO_DIR" "$(mlt_free_port)")
fi

export MLFLOW_TRACKING_URI=$uri
export MLFLOW_EXPERIMENT_NAME=${MLFLOW_EXPERIMENT_NAME:-mltrack-demo}
printf '\n==== running examples/train_model (MLFLOW_TRACKING_URI=%s, MLFLOW_EXPERIMENT_NAME=%s)\n' \
    "$MLFLOW_TRACKING_URI" "$MLFLOW_EXPERIMENT_NAME"
rc=0
"$BUILD_DIR/examples/train_model" || rc=$?

experiment_url=""
if exp_id=$(curl -s --noproxy '*' --max-time 5 --get \
    --data-urlencode "experiment_name=$MLFLOW_EXPERIMENT_NAME" \
    "$uri/api/2.0/mlflow/experiments/get-by-name" | jq -er '.experiment.experiment_id' 2>/dev/null); then
    experiment_url="$uri/#/experiments/$exp_id?workflowType=machine_learning" # "Model training"
fi

printf '\n'
((rc == 0)) || echo "examples/train_model failed (exit $rc)"
echo "MLflow server (UI):  $uri"
[[ -z $experiment_url ]] || echo "experiment:          $experiment_url"
echo "the server keeps running in the background; stop it with:"
echo "  $SCRIPTS/mlflow-server.sh stop $DEMO_DIR"
exit "$rc"
