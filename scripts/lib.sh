#!/usr/bin/env bash
# Shared helpers for scripts/test.sh, scripts/demo.sh and scripts/mlflow-server.sh.
# Source it (works under `set -euo pipefail`); it only defines variables and functions.

# The MLflow server release every test and the demo run against, in ONE place.
# Pinned to 3.17.2: 3.18.0 cannot be installed from the package index used here (its dependency
# mlflow-skinny 3.18.0 is not published there). Move the pin forward once it is.
MLT_MLFLOW_VERSION=3.17.2
# the basic-auth app of mlflow[auth] (tests/integration/test_auth.py)
MLT_FLASK_WTF_VERSION=1.3.0
# The PostgreSQL driver of the MLflow server's SQL store (scripts/check-scale.sh), in the same venv.
MLT_PSYCOPG2_VERSION=2.9.10
# Multipart uploads (tests/integration/test_multipart.py): an S3-compatible store on 127.0.0.1, the
# moto server, in a venv of its own (its pins stay apart from mlflow's), and boto3 in the server's
# venv for its s3:// artifact destination.
MLT_MOTO_VERSION=5.2.6
MLT_BOTO3_VERSION=1.44.18

# Debian packages needed to build, test and demo (checked one by one, installed only if missing).
# (nginx-light and openssl: the TLS terminator and the test CA of tests/integration/test_tls.py;
# postgresql: the database behind the MLflow server of the scale check, scripts/check-scale.sh;
# clang: tests/check_header.sh compiles the public headers with clang as well as gcc;
# libssl-dev: OpenSSL's libcrypto, for the SHA-256 of artifacts)
MLT_DEB_PACKAGES=(build-essential autoconf automake libtool pkg-config libcurl4-openssl-dev
    libcjson-dev check valgrind python3 python3-venv curl jq git man-db groff-base nginx-light
    openssl postgresql clang libssl-dev)

# The UI check (scripts/check-ui.sh) only: Debian's Chromium and its WebDriver (same version, from
# the same source package), a font for the screenshot, and Selenium from PyPI in the venv.
MLT_UI_DEB_PACKAGES=(chromium chromium-driver fonts-liberation)
# Pinned to 4.51.0: 4.52.0 needs a certifi release that the package index used here lacks.
MLT_SELENIUM_VERSION=4.51.0

# The source tree: the parent of the directory holding this file.
MLT_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export MLT_SRC

mlt_log() { printf '[mltrack] %s\n' "$*" >&2; }
mlt_die() {
    printf '[mltrack] error: %s\n' "$*" >&2
    return 1
}

# Only loopback is ever contacted by the tests: keep any configured HTTP proxy away from it, and
# keep the MLflow client and server from sending usage telemetry anywhere.
mlt_local_env() {
    export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
    export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
    export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
}

# Install the Debian packages that are missing; does nothing (fast) when all are present.
mlt_install_deps() {
    mlt_install_debs "${MLT_DEB_PACKAGES[@]}"
}

# The same for the UI check's packages.
mlt_install_ui_deps() {
    mlt_install_debs "${MLT_UI_DEB_PACKAGES[@]}"
}

# mlt_install_debs PACKAGE...: install those of the Debian packages that are missing.
mlt_install_debs() {
    local p status missing=()
    command -v dpkg-query >/dev/null 2>&1 || {
        mlt_die "dpkg-query not found: install by hand: $*"
        return 1
    }
    for p in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        mlt_log "Debian packages: all present"
        return 0
    fi
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            mlt_die "missing packages (${missing[*]}) and not root, no sudo: install them by hand"
            return 1
        fi
    fi
    mlt_log "installing missing Debian packages: ${missing[*]}"
    ${sudo[@]+"${sudo[@]}"} apt-get update || return 1
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$@" || return 1
}

# Where the virtual environment lives (outside the source tree).
mlt_venv_dir() {
    printf '%s\n' "${MLTRACK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mltrack/venv}"
}

# Set MLT_VENV, MLT_PYTHON, MLT_MLFLOW without checking or installing anything.
mlt_venv_vars() {
    MLT_VENV=$(mlt_venv_dir)
    MLT_PYTHON=$MLT_VENV/bin/python
    MLT_MLFLOW=$MLT_VENV/bin/mlflow
    MLT_S3_VENV=$MLT_VENV-s3
    MLT_MOTO_SERVER=$MLT_S3_VENV/bin/moto_server
    export MLT_VENV MLT_PYTHON MLT_MLFLOW MLT_S3_VENV MLT_MOTO_SERVER
}

# Create the virtual environment if needed and make sure it has mlflow[auth]==$MLT_MLFLOW_VERSION,
# psycopg2-binary==$MLT_PSYCOPG2_VERSION and pytest; exports MLT_PYTHON and MLT_MLFLOW. Serialized
# with flock, so concurrent callers are safe.
mlt_venv() {
    mlt_venv_vars
    case "$MLT_VENV/" in
    "$MLT_SRC"/*)
        mlt_die "the virtual environment ($MLT_VENV) must be outside the source tree"
        return 1
        ;;
    esac
    mkdir -p "$(dirname "$MLT_VENV")" || return 1
    (
        exec 9>"$MLT_VENV.lock"
        flock 9
        local py=$MLT_PYTHON
        if [[ ! -x $py ]] || ! "$py" -m pip --version >/dev/null 2>&1; then
            mlt_log "creating Python virtual environment in $MLT_VENV"
            python3 -m venv --clear "$MLT_VENV" || exit 1
        fi
        if "$py" -c 'import mlflow,sys; sys.exit(mlflow.__version__!=sys.argv[1])' \
            "$MLT_MLFLOW_VERSION" >/dev/null 2>&1 &&
            "$py" -c 'import flask_wtf,sys; sys.exit(flask_wtf.__version__!=sys.argv[1])' \
                "$MLT_FLASK_WTF_VERSION" >/dev/null 2>&1 &&
            "$py" -c 'import psycopg2,sys; sys.exit(psycopg2.__version__.split()[0]!=sys.argv[1])' \
                "$MLT_PSYCOPG2_VERSION" >/dev/null 2>&1 &&
            "$py" -c 'import pytest' >/dev/null 2>&1 && [[ -x $MLT_MLFLOW ]]; then
            mlt_log "Python venv: mlflow[auth] $MLT_MLFLOW_VERSION, psycopg2 and pytest present ($MLT_VENV)"
            exit 0
        fi
        mlt_log "installing mlflow[auth]==$MLT_MLFLOW_VERSION, psycopg2-binary and pytest into $MLT_VENV"
        MLFLOW_DISABLE_TELEMETRY=true "$py" -m pip install -q --disable-pip-version-check \
            "mlflow[auth]==$MLT_MLFLOW_VERSION" "Flask-WTF==$MLT_FLASK_WTF_VERSION" \
            "psycopg2-binary==$MLT_PSYCOPG2_VERSION" pytest || exit 1
        "$py" -c 'import mlflow,sys; sys.exit(mlflow.__version__!=sys.argv[1])' \
            "$MLT_MLFLOW_VERSION" || {
            mlt_die "mlflow $MLT_MLFLOW_VERSION not importable after install"
            exit 1
        }
    ) || return 1
}

# Make sure the venv (mlt_venv) also has boto3==$MLT_BOTO3_VERSION (the server's s3:// artifact
# destination), and that a venv of its own, $MLT_S3_VENV, has moto[server]==$MLT_MOTO_VERSION
# (an S3-compatible store for the multipart tests): exports MLT_MOTO_SERVER.
mlt_venv_s3() {
    mlt_venv || return 1
    (
        exec 9>"$MLT_VENV.lock"
        flock 9
        if ! "$MLT_PYTHON" -c 'import boto3,sys; sys.exit(boto3.__version__!=sys.argv[1])' \
            "$MLT_BOTO3_VERSION" >/dev/null 2>&1; then
            mlt_log "installing boto3==$MLT_BOTO3_VERSION into $MLT_VENV"
            "$MLT_PYTHON" -m pip install -q --disable-pip-version-check \
                "boto3==$MLT_BOTO3_VERSION" || exit 1
        fi
        local py=$MLT_S3_VENV/bin/python
        if "$py" -c 'import moto,sys; sys.exit(moto.__version__!=sys.argv[1])' \
            "$MLT_MOTO_VERSION" >/dev/null 2>&1 && [[ -x $MLT_MOTO_SERVER ]]; then
            mlt_log "S3 venv: moto $MLT_MOTO_VERSION present ($MLT_S3_VENV)"
            exit 0
        fi
        mlt_log "installing moto[server]==$MLT_MOTO_VERSION into $MLT_S3_VENV"
        if [[ ! -x $py ]] || ! "$py" -m pip --version >/dev/null 2>&1; then
            python3 -m venv --clear "$MLT_S3_VENV" || exit 1
        fi
        "$py" -m pip install -q --disable-pip-version-check "moto[server]==$MLT_MOTO_VERSION" ||
            exit 1
    ) || return 1
}

# Make sure the venv (mlt_venv) also has selenium==$MLT_SELENIUM_VERSION, for the UI check.
mlt_venv_ui() {
    mlt_venv || return 1
    (
        exec 9>"$MLT_VENV.lock"
        flock 9
        if "$MLT_PYTHON" -c 'import selenium,sys; sys.exit(selenium.__version__!=sys.argv[1])' \
            "$MLT_SELENIUM_VERSION" >/dev/null 2>&1; then
            mlt_log "Python venv: selenium $MLT_SELENIUM_VERSION present"
            exit 0
        fi
        mlt_log "installing selenium==$MLT_SELENIUM_VERSION into $MLT_VENV"
        "$MLT_PYTHON" -m pip install -q --disable-pip-version-check \
            "selenium==$MLT_SELENIUM_VERSION" || exit 1
    ) || return 1
}

# Run autoreconf -fi in the source tree if configure is missing or older than its inputs.
mlt_autoreconf() {
    (
        cd "$MLT_SRC" || exit 1
        exec 9<configure.ac # flock on a file we only read: no lock file in the tree
        flock 9
        if [[ ! -x configure || configure.ac -nt configure || Makefile.am -nt configure ]]; then
            mlt_log "autoreconf -fi in $MLT_SRC"
            autoreconf -fi || exit 1
        fi
    ) || return 1
}

# mlt_build DIR [configure args...]: an out-of-tree (VPATH) build in DIR.
mlt_build() {
    local dir=${1:?usage: mlt_build DIR [configure args...]}
    shift
    if [[ -f $MLT_SRC/config.status ]]; then
        mlt_die "$MLT_SRC is configured in place, which prevents out-of-tree builds: run 'make distclean' there"
        return 1
    fi
    mlt_autoreconf || return 1
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd -P) || return 1
    local want have=""
    want=$(printf '%q ' "$MLT_SRC/configure" --enable-werror "$@")
    [[ -f $dir/.mlt-configure-args ]] && have=$(<"$dir/.mlt-configure-args")
    if [[ ! -f $dir/Makefile || $have != "$want" ]]; then
        rm -f "$dir/.mlt-configure-args"
        mlt_log "configuring $dir: $want"
        (cd "$dir" && "$MLT_SRC/configure" --enable-werror "$@") || return 1
        printf '%s\n' "$want" >"$dir/.mlt-configure-args"
    fi
    mlt_log "building in $dir"
    make -C "$dir" -j"$(nproc)" || return 1
}

# Print a TCP port on 127.0.0.1 that is free right now.
mlt_free_port() {
    local py=${MLT_PYTHON:-}
    [[ -n $py && -x $py ]] || py=python3
    "$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# For the check scripts run by hand: when MLTRACK_TEST_TRACKING_URI is unset, start a private MLflow
# server in a temporary directory (MLT_OWN_SERVER_DIR) and export its URI; mlt_own_server_stop
# (call it from the script's EXIT trap) stops it and removes its state. Needs mlt_venv_vars.
MLT_OWN_SERVER_DIR=""
mlt_own_server() {
    [[ -n ${MLTRACK_TEST_TRACKING_URI:-} ]] && return 0
    MLT_OWN_SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mltrack-check-server.XXXXXX") || return 1
    MLTRACK_TEST_TRACKING_URI=$("$MLT_SRC/scripts/mlflow-server.sh" start "$MLT_OWN_SERVER_DIR") ||
        return 1
    export MLTRACK_TEST_TRACKING_URI
}
mlt_own_server_stop() {
    [[ -n $MLT_OWN_SERVER_DIR ]] || return 0
    "$MLT_SRC/scripts/mlflow-server.sh" stop "$MLT_OWN_SERVER_DIR" || true
    rm -rf "$MLT_OWN_SERVER_DIR"
    MLT_OWN_SERVER_DIR=""
}

# mlt_check_setup LABEL: the start of a check script (scripts/check-*.sh): BUILD_ROOT (made if
# missing), WORK (a scratch directory the script may set, removed at exit), the private server of
# mlt_own_server stopped at exit, and mlt_fail MESSAGE, which says "LABEL: MESSAGE" and exits 1.
mlt_check_setup() {
    MLT_CHECK_LABEL=$1
    mlt_local_env
    mkdir -p "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}"
    BUILD_ROOT=$(cd "${MLTRACK_BUILD_ROOT:-$MLT_SRC/build}" && pwd -P)
    WORK=""
    trap mlt_check_cleanup EXIT
}
mlt_check_cleanup() {
    local rc=$?
    mlt_own_server_stop
    if [[ -n $WORK ]]; then
        rm -rf "$WORK"
    fi
    exit "$rc"
}
mlt_fail() {
    mlt_die "$MLT_CHECK_LABEL: $*" || true
    exit 1
}
