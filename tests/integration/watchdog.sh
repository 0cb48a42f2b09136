#!/usr/bin/env bash
# Integration (operating): what systemd sees through the notify socket. The daemon runs with
# NOTIFY_SOCKET and WATCHDOG_USEC set as systemd would (WatchdogSec=2s here), a listener records
# every datagram. Checked: READY=1; WATCHDOG=1 about every second while streaming, also while
# apply waits on a row lock another session holds (the server's time, not a wedge of ours); a
# STATUS= line every ~5 s "streaming (forward), lag X s, N txns applied"; WATCHDOG=1 stops when
# the stream is wedged (the source's walsender SIGSTOPped: nothing arrives and the reader's
# replies are not seen there) and comes back once it moves again; RELOADING=1/READY=1 around a
# SIGHUP; STOPPING=1 on SIGTERM.
# Usage: watchdog.sh PGSHIFT_BINARY
set -euo pipefail
source "$(dirname "$0")/daemon-test.sh"
command -v python3 >/dev/null && python3 -c 'import socket' 2>/dev/null || { echo "python3 not installed: skipped"; exit 77; }

psql_src "CREATE TABLE items (id int PRIMARY KEY, v int)"
psql_dst "CREATE TABLE items (id int PRIMARY KEY, v int)"
psql_src "INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g"
psql_dst "INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g"
port=$(free_port)
cat > "$work/pgshift.yaml" <<YAML
name: wd
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
apply: {workers: 1}
control: {listen: "127.0.0.1:$port"}
YAML

# The notify socket: one line per datagram line, "<unix time> <line>".
notify="$work/notify.sock"
python3 - "$notify" "$work/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        for line in s.recv(65536).decode().split("\n"):
            if line:
                out.write("%.3f %s\n" % (time.time(), line))
PY
listener=$!
on_exit 'kill "$listener" 2>/dev/null'
for _ in $(seq 1 50); do [ -S "$notify" ] && break; sleep 0.1; done
touch "$work/notify.log"

NOTIFY_SOCKET="$notify" WATCHDOG_USEC=2000000 "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 &
daemon=$!
wait_ready "http://127.0.0.1:$port" 30 "pgshift did not become ready"
for _ in $(seq 1 50); do grep -q " READY=1$" "$work/notify.log" && break; sleep 0.1; done
grep -q " READY=1$" "$work/notify.log" || fail "no READY=1"

now() { date +%s.%N; }
# count_since T PATTERN: notify lines at or after unix time T matching PATTERN (grep -E).
count_since() { awk -v t="$1" '$1 >= t' "$work/notify.log" | cut -d' ' -f2- | grep -cE "$2" || true; }

# Streaming: pings and a periodic STATUS line with the counters.
for i in $(seq 1 30); do psql_src "UPDATE items SET v = v + 1 WHERE id = $i"; done
t=$(now); sleep 6
pings=$(count_since "$t" '^WATCHDOG=1$')
echo "streaming: $pings WATCHDOG=1 in 6 s"
[ "$pings" -ge 4 ] || fail "only $pings WATCHDOG=1 in 6 s while streaming (WatchdogSec=2s: one a second expected)"
status=$(awk -v t="$t" '$1 >= t' "$work/notify.log" | cut -d' ' -f2- | grep -E '^STATUS=streaming \(forward\), lag [0-9.]+ s, [0-9]+ txns applied$' | tail -1 || true)
echo "last periodic status: $status"
[ -n "$status" ] || { cat "$work/notify.log" | tail; fail "no periodic STATUS= line while streaming"; }
applied=$(echo "$status" | sed -E 's/.* ([0-9]+) txns applied$/\1/')
[ "$applied" -ge 30 ] || fail "STATUS says $applied txns applied, expected at least 30"

# Apply waits on a lock another session holds: the server's time, pings go on.
block_apply wd "items WHERE id = 7" "UPDATE items SET v = v + 1 WHERE id = 7"
t=$(now); sleep 25
[ "$(psql_dst "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'pgshift_wd_w%'")" = 1 ] ||
  fail "apply is not waiting on the row lock"
pings=$(count_since "$t" '^WATCHDOG=1$')
echo "apply waiting on a lock for 25 s: $pings WATCHDOG=1"
[ "$pings" -ge 20 ] || fail "only $pings WATCHDOG=1 in 25 s while apply waits on a lock"
unblock_apply
for _ in $(seq 1 50); do [ "$(psql_dst "SELECT v FROM items WHERE id = 7")" = 2 ] && break; sleep 0.2; done

# The stream wedges: the walsender stops. WATCHDOG=1 must stop, then resume once it moves again.
walsender=$(psql_src "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'pgshift_wd'")
[ -n "$walsender" ] || fail "no walsender"
kill -STOP "$walsender"
on_exit "kill -CONT $walsender 2>/dev/null"
for _ in $(seq 1 40); do grep -q "watchdog: the stream is stuck" "$work/pgshift.log" && break; sleep 1; done
grep -q "watchdog: the stream is stuck" "$work/pgshift.log" || { kill -CONT "$walsender"; fail "no watchdog verdict 40 s after the walsender stopped"; }
t=$(now); sleep 5
pings=$(count_since "$t" '^WATCHDOG=1$')
wedged=$(grep -c '^.* STATUS=wedged: the stream is stuck' "$work/notify.log" || true)
kill -CONT "$walsender"
echo "stream wedged: $pings WATCHDOG=1 in 5 s, $wedged STATUS=wedged line(s)"
[ "$pings" = 0 ] || fail "$pings WATCHDOG=1 sent while the stream was wedged"
[ "$wedged" -ge 1 ] || fail "no STATUS=wedged line"
for _ in $(seq 1 20); do grep -q "WATCHDOG=1 resumes" "$work/pgshift.log" && break; sleep 1; done
grep -q "WATCHDOG=1 resumes" "$work/pgshift.log" || fail "the watchdog did not recover after the walsender resumed"
t=$(now); sleep 3
pings=$(count_since "$t" '^WATCHDOG=1$')
[ "$pings" -ge 2 ] || fail "only $pings WATCHDOG=1 in 3 s after the recovery"

# SIGHUP: RELOADING=1, then READY=1 again.
t=$(now)
kill -HUP "$daemon"
for _ in $(seq 1 30); do [ "$(count_since "$t" '^READY=1$')" -ge 1 ] && break; sleep 0.1; done
[ "$(count_since "$t" '^RELOADING=1$')" -ge 1 ] || fail "no RELOADING=1 after SIGHUP"
[ "$(count_since "$t" '^READY=1$')" -ge 1 ] || fail "no READY=1 after the reload"

t=$(now)
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM did not exit 0"; daemon=""
[ "$(count_since "$t" '^STOPPING=1$')" -ge 1 ] || fail "no STOPPING=1 on SIGTERM"
echo "ok: READY, WATCHDOG=1 only while healthy (also during a lock wait), periodic STATUS, RELOADING/READY, STOPPING"
