#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for tests, benchmarks and the demo: start DIR PORT, stop DIR, free-port.
#
# Usage:
#   pgcluster.sh start DIR PORT [-c name=value | name=value ...]
#       initdb into DIR (the data directory; created if missing, must be empty),
#       trust auth, listens on 127.0.0.1:PORT only, unix socket inside DIR,
#       logical replication settings, extra settings last (they win).
#       Waits until the server accepts connections. Prints nothing but errors.
#   pgcluster.sh stop DIR
#       fast shutdown, then immediate, then SIGKILL; removes DIR. Succeeds when DIR is already gone.
#   pgcluster.sh restart DIR [fast|immediate]
#       restarts the server (immediate = crash-like: no shutdown checkpoint), waits until it is up.
#   pgcluster.sh free-port
#       prints a TCP port that is free on 127.0.0.1 (outside the ephemeral range).
#
# PostgreSQL refuses to run as root: when called as root, the cluster belongs to the
# `postgres` user (override with PGCLUSTER_USER) and every server command runs through
# runuser. Otherwise everything runs as the calling user. The server log is DIR/server.log.
set -euo pipefail

die() {
    echo "pgcluster.sh: $*" >&2
    exit 1
}

pg_bindir() {
    local dir=""
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
    fi
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        dir=/usr/lib/postgresql/15/bin
    fi
    [[ -x "$dir/initdb" ]] || die "cannot find initdb (tried pg_config --bindir and $dir)"
    echo "$dir"
}

run_user() {
    if [[ $EUID -eq 0 ]]; then
        echo "${PGCLUSTER_USER:-postgres}"
    else
        id -un
    fi
}

# Runs a command as the cluster owner, from / so that an unreadable cwd causes no warnings.
as_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$(run_user)" -- "$@")
    else
        (cd / && "$@")
    fi
}

port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]] && return 0
    fi
    # Something answering on the port means it is taken (covers the no-ss case).
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    return 1
}

cmd_free_port() {
    local low=20000 high=32000 port i
    for ((i = 0; i < 200; i++)); do
        port=$((low + (RANDOM * 32768 + RANDOM) % (high - low)))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found in $low-$high"
}

# Quotes a value for postgresql.conf: every setting may be given as a quoted string.
conf_quote() {
    local v=${1//\\/\\\\}
    v=${v//\'/\'\'}
    printf "'%s'" "$v"
}

cmd_start() {
    [[ $# -ge 2 ]] || die "usage: pgcluster.sh start DIR PORT [-c name=value ...]"
    local dir=$1 port=$2
    shift 2
    [[ -n "$dir" ]] || die "empty DIR"
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"

    local extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -c)
                [[ $# -ge 2 ]] || die "-c needs name=value"
                extra+=("$2")
                shift 2
                ;;
            -c*)
                extra+=("${1#-c}")
                shift
                ;;
            --*=*)
                extra+=("${1#--}")
                shift
                ;;
            *=*)
                extra+=("$1")
                shift
                ;;
            *) die "unexpected argument '$1' (expected -c name=value)" ;;
        esac
    done

    local bindir owner
    bindir="$(pg_bindir)"
    owner="$(run_user)"

    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    if [[ -n "$(ls -A "$dir")" ]]; then
        die "$dir is not empty"
    fi
    if [[ $EUID -eq 0 ]]; then
        chown "$owner": "$dir"
        runuser -u "$owner" -- test -w "$dir" ||
            die "$dir is not reachable by user $owner (check the permissions of its parent directories)"
    fi
    chmod 700 "$dir"

    local initlog
    initlog="$(mktemp)"
    if ! as_owner "$bindir/initdb" -D "$dir" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        >"$initlog" 2>&1; then
        # Older or locale-less systems: retry with the C locale.
        if grep -q -i locale "$initlog" && as_owner "$bindir/initdb" -D "$dir" -A trust -U postgres \
            -E UTF8 --locale=C >"$initlog" 2>&1; then
            :
        else
            cat "$initlog" >&2
            rm -f "$initlog"
            die "initdb failed for $dir"
        fi
    fi
    rm -f "$initlog"
    # Marks the directory as ours, so that `stop` may delete it.
    as_owner touch "$dir/.pgcluster"

    {
        echo ""
        echo "# pgcluster.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = $(conf_quote "$dir")"
        echo "wal_level = logical"
        echo "max_replication_slots = 20"
        echo "max_wal_senders = 20"
        echo "shared_buffers = '128MB'"
        echo "max_connections = 100"
        echo "wal_sender_timeout = '60s'"
        echo "logging_collector = off"
        echo "log_line_prefix = '%m [%p] %q%u@%d %a '"
        local kv name value
        for kv in "${extra[@]+"${extra[@]}"}"; do
            name=${kv%%=*}
            value=${kv#*=}
            [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_.]*$ ]] || die "bad setting name in '$kv'"
            echo "$name = $(conf_quote "$value")"
        done
    } >>"$dir/postgresql.conf"

    if ! as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 -s start >/dev/null 2>&1; then
        echo "pgcluster.sh: server in $dir failed to start on port $port; log tail:" >&2
        tail -n 30 "$dir/server.log" >&2 2>/dev/null || true
        exit 1
    fi

    local i
    for ((i = 0; i < 120; i++)); do
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.25
    done
    echo "pgcluster.sh: server in $dir does not answer on 127.0.0.1:$port; log tail:" >&2
    tail -n 30 "$dir/server.log" >&2 2>/dev/null || true
    exit 1
}

cmd_stop() {
    [[ $# -eq 1 ]] || die "usage: pgcluster.sh stop DIR"
    local dir=$1
    [[ -n "$dir" ]] || die "empty DIR"
    [[ -e "$dir" ]] || return 0
    dir="$(cd "$dir" && pwd -P)"
    [[ "$dir" != "/" ]] || die "refusing to remove /"

    if [[ ! -f "$dir/PG_VERSION" && ! -f "$dir/.pgcluster" && -n "$(ls -A "$dir")" ]]; then
        die "$dir does not look like a pgcluster.sh cluster; not removing it"
    fi

    if [[ -f "$dir/postmaster.pid" ]]; then
        local bindir
        bindir="$(pg_bindir)"
        if ! as_owner "$bindir/pg_ctl" -D "$dir" -m fast -w -t 30 -s stop >/dev/null 2>&1; then
            as_owner "$bindir/pg_ctl" -D "$dir" -m immediate -w -t 30 -s stop >/dev/null 2>&1 || true
        fi
        # Last resort: the postmaster still runs (or pg_ctl could not tell); kill it.
        if [[ -f "$dir/postmaster.pid" ]]; then
            local pid
            pid="$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
                local i
                for ((i = 0; i < 50; i++)); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
            fi
        fi
    fi
    rm -rf -- "$dir"
}

cmd_restart() {
    [[ $# -eq 1 || $# -eq 2 ]] || die "usage: pgcluster.sh restart DIR [fast|immediate]"
    local dir=$1 mode=${2:-fast}
    [[ -f "$dir/postmaster.pid" ]] || die "no server runs in $dir"
    as_owner "$(pg_bindir)/pg_ctl" -D "$dir" -l "$dir/server.log" -m "$mode" -w -t 60 -s restart >/dev/null 2>&1 ||
        die "restart of $dir failed"
}

main() {
    [[ $# -ge 1 ]] || die "usage: pgcluster.sh start DIR PORT [-c name=value ...] | stop DIR | free-port"
    local cmd=$1
    shift
    case "$cmd" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        restart) cmd_restart "$@" ;;
        free-port) cmd_free_port "$@" ;;
        *) die "unknown command '$cmd' (start, stop, free-port)" ;;
    esac
}

main "$@"
