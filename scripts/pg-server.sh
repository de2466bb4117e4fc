#!/usr/bin/env bash
# A private PostgreSQL server (Debian's `postgresql` package) on 127.0.0.1 whose whole state lives in
# one directory: the database behind an MLflow server that scales out (scripts/check-scale.sh).
#
#   scripts/pg-server.sh start DIR [PORT]
#       Makes a cluster in DIR/pg/data the first time (initdb; run as the user `postgres` when we are
#       root, since PostgreSQL refuses to run as root; the directory DIR must then be reachable by
#       that user), starts it listening on 127.0.0.1:PORT only (a free port when PORT is not given)
#       with its unix socket in DIR/pg/run and its log in DIR/pg/postgres.log, waits until it
#       accepts connections, creates the role `mltrack` (a random password, kept in DIR/password)
#       and the database `mlflow` it owns, writes DIR/port and DIR/uri, and prints the SQLAlchemy
#       URI (postgresql+psycopg2://mltrack:PASSWORD@127.0.0.1:PORT/mlflow) on stdout. Give it to
#       `scripts/mlflow-server.sh start DIR2 -- --backend-store-uri URI --workers 4`.
#   scripts/pg-server.sh stop DIR
#       Stops the server (fast shutdown, then immediate, then KILL of the postmaster after 30 s)
#       and waits until none of its processes is left. Keeps the data. Succeeds if nothing ran.
#   scripts/pg-server.sh status DIR
#       Prints the URI and exits 0 if the server of DIR is running, else exits 1.
# Environment: MLTRACK_PG_BINDIR, the PostgreSQL programs (default: the newest
# /usr/lib/postgresql/*/bin); MLTRACK_PG_MAX_CONNECTIONS (default 200).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_DB=mlflow
PG_ROLE=mltrack

die() {
    mlt_die "$@" || true
    exit 1
}

usage() {
    sed -n '4,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

bindir() {
    local d=${MLTRACK_PG_BINDIR:-}
    if [[ -z $d ]]; then
        d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
            sort -V | tail -n 1)
    fi
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/psql ]] ||
        die "no PostgreSQL programs (initdb, pg_ctl, psql) in '${d:-/usr/lib/postgresql/*/bin}': \
install the Debian package postgresql (scripts/lib.sh installs it with the other dependencies)"
    printf '%s\n' "$d"
}

# as_pg CMD...: run CMD as the user that owns the cluster (postgres when we are root).
AS_PG=()
init_user() {
    if [[ $(id -u) -eq 0 ]]; then
        id -u postgres >/dev/null 2>&1 ||
            die "running as root and there is no user 'postgres' (the postgresql package makes it)"
        AS_PG=(runuser -u postgres --)
    fi
}
as_pg() {
    ${AS_PG[@]+"${AS_PG[@]}"} "$@"
}

# postmaster_pid DATA: the pid of the running postmaster of DATA (status 1 if none).
postmaster_pid() {
    local pid
    [[ -f $1/postmaster.pid ]] || return 1
    pid=$(head -n 1 "$1/postmaster.pid")
    [[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

# The postmaster and its children (every backend and helper has the postmaster as parent).
server_procs() {
    ps -e -o pid=,ppid=,stat= | awk -v p="$1" '($1 == p || $2 == p) && $3 !~ /^Z/ { print $1 }'
}

cmd_start() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local dir=$1 port=${2:-} bin pid
    [[ -z $port || $port =~ ^[0-9]+$ ]] || usage
    bin=$(bindir)
    init_user
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    local pg=$dir/pg data=$dir/pg/data run=$dir/pg/run log=$dir/pg/postgres.log
    if pid=$(postmaster_pid "$data"); then
        die "a PostgreSQL server from $dir is already running (pid $pid); stop it first"
    fi
    mkdir -p "$pg" "$run"
    chmod 700 "$pg" "$run"
    if ((${#AS_PG[@]})); then
        chown -R postgres: "$pg"
        # the server's user must reach DIR/pg: let it pass through DIR (not list it)
        as_pg test -x "$dir" || chmod o+x "$dir"
        as_pg test -w "$pg" ||
            die "the user postgres cannot reach $pg (a parent directory is closed to it): \
give a DIR under /tmp"
    fi

    [[ -n $port ]] || port=$(mlt_free_port)
    if [[ ! -f $data/PG_VERSION ]]; then
        mlt_log "initdb in $data"
        as_pg "$bin/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$pg/initdb.log" 2>&1 ||
            { tail -n 20 "$pg/initdb.log" >&2; die "initdb failed (log: $pg/initdb.log)"; }
    fi
    # The address, port and socket are given at each start (a restart may take another port).
    local opts="-c listen_addresses=127.0.0.1 -p $port -k $run"
    opts+=" -c max_connections=${MLTRACK_PG_MAX_CONNECTIONS:-200}"
    if ! as_pg "$bin/pg_ctl" -D "$data" -l "$log" -o "$opts" -w -t 60 start >/dev/null; then
        tail -n 20 "$log" >&2 || true
        die "PostgreSQL did not start (log: $log)"
    fi
    printf '%s\n' "$port" >"$dir/port"

    local pw
    if [[ -f $dir/password ]]; then
        pw=$(<"$dir/password")
    else
        pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
        (umask 077 && printf '%s\n' "$pw" >"$dir/password")
    fi
    local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$run" -p "$port" -U postgres)
    if ! as_pg "${psql[@]}" -d postgres >"$pg/setup.log" 2>&1 <<EOF; then
SELECT 'CREATE ROLE $PG_ROLE LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE')\\gexec
ALTER ROLE $PG_ROLE PASSWORD '$pw';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_ROLE'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\\gexec
EOF
        cat "$pg/setup.log" >&2
        cmd_stop "$dir" || true
        die "could not create the role $PG_ROLE and the database $PG_DB"
    fi
    local uri="postgresql+psycopg2://$PG_ROLE:$pw@127.0.0.1:$port/$PG_DB"
    (umask 077 && printf '%s\n' "$uri" >"$dir/uri")
    mlt_log "PostgreSQL up on 127.0.0.1:$port (pid $(postmaster_pid "$data"), log: $log)"
    printf '%s\n' "$uri"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 data pid bin tries
    data=$dir/pg/data
    if ! pid=$(postmaster_pid "$data"); then
        mlt_log "no PostgreSQL server running in $dir"
        return 0
    fi
    bin=$(bindir)
    init_user
    if ! as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1; then
        mlt_log "PostgreSQL (pid $pid) did not stop in 30 s: immediate shutdown"
        as_pg "$bin/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    tries=150
    while [[ -n $(server_procs "$pid") ]]; do
        if ((tries-- == 0)); then
            mlt_log "PostgreSQL (pid $pid) still running: KILL"
            server_procs "$pid" | xargs -r kill -KILL 2>/dev/null || true
            sleep 1
            [[ -z $(server_procs "$pid") ]] ||
                die "processes of PostgreSQL $pid survived KILL: $(server_procs "$pid" | xargs)"
            break
        fi
        sleep 0.2
    done
    mlt_log "PostgreSQL (pid $pid) stopped"
}

cmd_status() {
    [[ $# -eq 1 ]] || usage
    postmaster_pid "$1/pg/data" >/dev/null || return 1
    cat "$1/uri"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status "$@" ;;
*) usage ;;
esac
