#!/usr/bin/env bash
# CPU time and peak memory of process trees, read from /proc, for the benchmarks.
#
# Usage:
#   bench/cpu.sh ticks PID...
#       one line, one number per PID: the clock ticks (getconf CLK_TCK per second) of user + system
#       time used so far by PID and all its descendants. Each process counts utime + stime, plus
#       cutime + cstime: the time of its children that have exited and were waited for, so that a
#       backend that ends between two samples is not lost as long as its postmaster has reaped it.
#       Sample before and after, subtract. PID 0 or a PID that is gone gives 0.
#   bench/cpu.sh hwm PID
#       peak resident set size of PID (VmHWM) in KiB; 0 when PID is gone.
# Caveats: one pass over /proc is not atomic (a child that exits during the pass may be counted
# twice or not at all: a few ticks); the time of a child that exited but is not yet reaped is lost
# until its parent reaps it; processes that re-parent away from the tree (double fork) are lost.
set -euo pipefail

die() {
    echo "cpu.sh: $*" >&2
    exit 1
}

cmd_ticks() {
    [[ $# -ge 1 ]] || die "usage: cpu.sh ticks PID..."
    local pid
    for pid in "$@"; do [[ "$pid" =~ ^[0-9]+$ ]] || die "not a PID: '$pid'"; done
    # cat goes on past processes that exit while the glob is read (awk would stop).
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$*" '
        {
            pid = $1
            sub(/^.*\) /, "") # the command name may hold spaces and parentheses: cut up to the last ") "
            # now $1 = state, $2 = ppid, $12..$15 = utime stime cutime cstime
            parent[pid] = $2
            ticks[pid] = $12 + $13 + $14 + $15
        }
        END {
            n = split(roots, root, " ")
            for (i = 1; i <= n; i++) { want[root[i]] = i; sum[i] = 0 }
            for (p in ticks) {
                q = p
                for (depth = 0; depth < 64 && q != "" && q != 0; depth++) {
                    if (q in want) { sum[want[q]] += ticks[p]; break }
                    q = parent[q]
                }
            }
            out = ""
            for (i = 1; i <= n; i++) out = out (i > 1 ? " " : "") sum[i]
            print out
        }'
}

cmd_hwm() {
    [[ $# -eq 1 && "$1" =~ ^[0-9]+$ ]] || die "usage: cpu.sh hwm PID"
    awk '/^VmHWM:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}

main() {
    [[ $# -ge 1 ]] || die "usage: cpu.sh ticks PID... | hwm PID"
    local cmd=$1
    shift
    case "$cmd" in
        ticks) cmd_ticks "$@" ;;
        hwm) cmd_hwm "$@" ;;
        *) die "unknown command '$cmd' (ticks, hwm)" ;;
    esac
}

main "$@"
