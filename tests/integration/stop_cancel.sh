#!/usr/bin/env bash
# Integration (operating): one SIGTERM is enough while apply waits on a row lock that another
# session holds on the target: after a few seconds the stop cancels the blocked statement
# (PQcancel), the worker rolls back as for a stop, and the daemon exits 0 by itself instead of
# waiting for systemd's SIGKILL. Nothing is lost or doubled: after a restart (lock released)
# the blocked transaction arrives exactly once (a keyless ledger row shows a replay as a
# duplicate).
# Usage: stop_cancel.sh PGSHIFT_BINARY
set -euo pipefail
source "$(dirname "$0")/daemon-test.sh"

schema="CREATE TABLE items (id int PRIMARY KEY, v int);
        CREATE TABLE ledger (n int NOT NULL); ALTER TABLE ledger REPLICA IDENTITY FULL"
psql_src "$schema"
psql_dst "$schema"
psql_src "INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g"
psql_dst "INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g"
port=$(free_port)
cat > "$work/pgshift.yaml" <<YAML
name: stopcancel
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
apply: {workers: 2}
control: {listen: "127.0.0.1:$port"}
YAML
start() { "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!; }
start
wait_ready "http://127.0.0.1:$port" 30 "pgshift did not become ready"

# A session on the target holds row 7; one source transaction, the blocked update and a ledger
# row, waits for it in apply.
block_apply stopcancel "items WHERE id = 7" "UPDATE items SET v = v + 1 WHERE id = 7; INSERT INTO ledger VALUES (1)"
log_lines=$(wc -l <"$work/pgshift.log")

kill -TERM "$daemon"
t0=$(date +%s.%N)
for _ in $(seq 1 120); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
kill -0 "$daemon" 2>/dev/null && fail "still running 12 s after one SIGTERM while apply waits on a lock"
code=0; wait "$daemon" || code=$?
daemon=""
took=$(echo "$(date +%s.%N) - $t0" | bc)
echo "exited $(echo "$took" | cut -c1-4) s after one SIGTERM, code $code"
[ "$code" = 0 ] || fail "exit code $code after the SIGTERM, expected 0"
[ "$(echo "$took < 10" | bc)" = 1 ] || fail "took $took s to exit, expected under 10 s"
kill -0 "$locker" 2>/dev/null || fail "the lock holder is gone: the test proves nothing"
after=$(tail -n +"$((log_lines + 1))" "$work/pgshift.log")
echo "$after" | grep -q "cancelled 1 running statement" || fail "the cancel was not logged"
echo "$after" | grep -q "its target statement .* was cancelled" || fail "the worker did not treat the cancel as a stop"
if echo "$after" | grep -E '^[0-9-]+ [0-9:.]+ error|\[error\]' ; then fail "the stop logged errors"; fi
echo "$after" | grep -q "^.*stopped$" || fail "the daemon did not end with 'stopped'"
[ "$(psql_dst "SELECT count(*) FROM ledger")" = 0 ] || fail "the cancelled transaction was committed"

# Nothing lost, nothing doubled: release the lock, restart, the blocked transaction arrives once.
unblock_apply
start
wait_ready "http://127.0.0.1:$port" 30 "pgshift did not become ready after the restart"
for _ in $(seq 1 100); do
  [ "$(psql_dst "SELECT count(*) FROM ledger")" = 1 ] && break
  sleep 0.2
done
psql_src "INSERT INTO ledger VALUES (2)" # a later transaction: once it is there, everything before is
for _ in $(seq 1 100); do
  [ "$(psql_dst "SELECT count(*) FROM ledger WHERE n = 2")" = 1 ] && break
  sleep 0.2
done
got="$(psql_dst "SELECT (SELECT count(*) FROM ledger WHERE n = 1) || ':' || (SELECT v FROM items WHERE id = 7) || ':' || (SELECT count(*) FROM ledger)")"
[ "$got" = "1:1:2" ] || fail "after the restart the target holds ledger(n=1):items(7).v:ledger = $got, want 1:1:2"
kill -TERM "$daemon"; wait "$daemon" || fail "the last SIGTERM did not exit 0"; daemon=""
echo "ok: one SIGTERM cancels apply's lock wait and exits 0; the transaction arrives exactly once after the restart"
