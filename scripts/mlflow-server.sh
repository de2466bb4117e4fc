#!/usr/bin/env bash
# A local MLflow tracking server on 127.0.0.1 whose whole state lives in one directory.
#
#   scripts/mlflow-server.sh start DIR [PORT] [--] [EXTRA MLFLOW SERVER ARGS...]
#       Starts `mlflow server` (sqlite store DIR/mlflow.db unless the extra args give a
#       --backend-store-uri; artifacts served through its artifact proxy and kept in DIR/artifacts
#       unless the extra args say otherwise; log appended to DIR/server.log) in its own
#       session/process group, waits until GET /health answers OK (MLTRACK_SERVER_TIMEOUT seconds,
#       default 120), writes DIR/pid, DIR/port and DIR/uri, and prints the URI
#       (http://127.0.0.1:PORT) on stdout. Without PORT a free port is picked; give the port of
#       DIR/port to restart a stopped server at the same address. Examples of extra args:
#       `--workers 1`; `--backend-store-uri postgresql://... --workers 4` (scripts/pg-server.sh).
#   scripts/mlflow-server.sh stop DIR
#       Stops the whole process group (TERM, then KILL after 10 s), so that no worker survives.
#       Keeps the data, the log, DIR/port and DIR/uri. Succeeds if nothing was running.
#   scripts/mlflow-server.sh status DIR
#       Prints the URI and exits 0 if the server of DIR is running and answers /health, else exits 1.
set -euo pipefail
set +m # no job control: the background child must not be a group leader, so setsid does not fork
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() {
    mlt_die "$@" || true
    exit 1
}

usage() {
    sed -n '3,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Live (non-zombie) processes whose process group or session is $1, one pid a line.
server_procs() {
    ps -e -o pid=,pgid=,sid=,stat= | awk -v g="$1" '($2 == g || $3 == g) && $4 !~ /^Z/ { print $1 }'
}

health() {
    curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null || true
}

port_free() {
    local py=${MLT_PYTHON:-}
    [[ -n $py && -x $py ]] || py=python3
    "$py" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()' "$1"
}

# The mlflow executable: $MLT_MLFLOW, else the project's venv (created if missing).
find_mlflow() {
    if [[ -n ${MLT_MLFLOW:-} && -x $MLT_MLFLOW ]]; then
        return 0
    fi
    mlt_venv_vars
    [[ -x $MLT_MLFLOW ]] || mlt_venv
}

read_pid() {
    local pid
    [[ -f $1/pid ]] || return 1
    pid=$(<"$1/pid")
    [[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) || return 1
    printf '%s\n' "$pid"
}

cmd_start() {
    [[ $# -ge 1 ]] || usage
    local dir=$1 port="" pid
    shift
    if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
        port=$1
        shift
    fi
    [[ ${1:-} == -- ]] && shift
    local extra=("$@") a store=() arts=()
    for a in ${extra[@]+"${extra[@]}"}; do
        case $a in
        -h | --host | --host=*) die "the server only ever listens on 127.0.0.1: drop $a" ;;
        esac
    done

    mkdir -p "$dir/artifacts"
    dir=$(cd "$dir" && pwd -P)
    # the sqlite store in DIR, unless the caller names one (e.g. PostgreSQL: scripts/pg-server.sh)
    case " ${extra[*]-} " in
    *" --backend-store-uri "* | *" --backend-store-uri="*) ;;
    *) store=(--backend-store-uri "sqlite:///$dir/mlflow.db") ;;
    esac
    # artifacts through the server's proxy (mlflow-artifacts: URIs), kept in DIR/artifacts, unless
    # the caller sets up artifacts itself (a server without the proxy, an S3 destination)
    case " ${extra[*]-} " in
    *" --default-artifact-root"* | *" --artifacts-destination"* | *" --no-serve-artifacts "*) ;;
    *) arts=(--artifacts-destination "$dir/artifacts") ;;
    esac
    if pid=$(read_pid "$dir") && [[ -n $(server_procs "$pid") ]]; then
        die "a server from $dir is already running (pid $pid); stop it first"
    fi
    find_mlflow
    [[ -n $port ]] || port=$(mlt_free_port)
    port_free "$port" || die "port $port on 127.0.0.1 is in use"
    mlt_local_env
    # The server's job runner (a pool of huey consumers for GenAI jobs) is not needed for tracking
    # and costs several busy processes: off unless asked for.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

    local log=$dir/server.log uri=http://127.0.0.1:$port
    printf '==== %s mltrack: starting mlflow server on %s\n' "$(date '+%F %T')" "$uri" >>"$log"
    setsid "$MLT_MLFLOW" server ${store[@]+"${store[@]}"} ${arts[@]+"${arts[@]}"} \
        --host 127.0.0.1 --port "$port" ${extra[@]+"${extra[@]}"} \
        >>"$log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$dir/pid"
    printf '%s\n' "$port" >"$dir/port"
    printf '%s\n' "$uri" >"$dir/uri"

    local timeout=${MLTRACK_SERVER_TIMEOUT:-120}
    local deadline=$((SECONDS + timeout))
    mlt_log "waiting for the MLflow server at $uri (log: $log)"
    until [[ $(health "$port") == OK ]]; do
        if [[ -z $(server_procs "$pid") ]]; then
            tail -n 40 "$log" >&2 || true
            rm -f "$dir/pid"
            die "the MLflow server exited before answering (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$log" >&2 || true
            cmd_stop "$dir" || true
            die "the MLflow server did not answer /health within ${timeout}s (log: $log)"
        fi
        sleep 0.5
    done
    mlt_log "MLflow server up at $uri (pid $pid)"
    printf '%s\n' "$uri"
}

# Wait up to $2 seconds for every process of group/session $1 to end; 0 if they all did.
wait_gone() {
    local tries=$(($2 * 5))
    while [[ -n $(server_procs "$1") ]]; do
        ((tries-- > 0)) || return 1
        sleep 0.2
    done
}

signal_all() {
    local p
    kill "-$1" -- "-$2" 2>/dev/null || true
    for p in $(server_procs "$2"); do # members that moved to another group of the session
        kill "-$1" "$p" 2>/dev/null || true
    done
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid
    if ! pid=$(read_pid "$dir"); then
        mlt_log "no MLflow server recorded in $dir"
        return 0
    fi
    if [[ -n $(server_procs "$pid") ]]; then
        signal_all TERM "$pid"
        if ! wait_gone "$pid" "${MLTRACK_SERVER_STOP_TIMEOUT:-10}"; then
            mlt_log "MLflow server (group $pid) still running after TERM: sending KILL"
            signal_all KILL "$pid"
            wait_gone "$pid" 10 || die "processes of group $pid survived KILL: $(server_procs "$pid" | xargs)"
        fi
        mlt_log "MLflow server (group $pid) stopped"
    else
        mlt_log "MLflow server (group $pid) was not running"
    fi
    rm -f "$dir/pid"
}

cmd_status() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid port
    pid=$(read_pid "$dir") || return 1
    [[ -n $(server_procs "$pid") ]] || return 1
    port=$(<"$dir/port")
    [[ $(health "$port") == OK ]] || return 1
    cat "$dir/uri"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
