# Sourced by the shell integration tests (after `set -euo pipefail`, with the pgshift binary as
# $1): the binary (PGSHIFT_BINARY overrides it, e.g. a sanitizer build), two throwaway clusters
# (scripts/cluster-pair.sh), `daemon` (a pid the exit hook kills), fail() with the log tail,
# wait_ready, wait_failed, block_apply/unblock_apply and start_pgbouncer. Skips the test (exit 77)
# when curl is missing.
bin=${PGSHIFT_BINARY:-$1}
command -v curl >/dev/null || { echo "curl not installed: skipped"; exit 77; }
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null'
fail() { echo "FAIL: $*"; echo "--- pgshift log"; tail -40 "$work/pgshift.log" || true; exit 1; }
# wait_ready API SECONDS WHY: waits until API/readyz answers 200, else fails with WHY and its answer.
wait_ready() {
  for _ in $(seq 1 $(( $2 * 5 ))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ] && return 0
    sleep 0.2
  done
  fail "$3: $(curl -s "$1/readyz")"
}
# wait_failed API: waits up to 20 s until API/v1/status says state "failed" and leaves that answer
# in $status (for the caller to check last_error), else fails with the last answer.
wait_failed() {
  status=""
  for _ in $(seq 1 100); do
    status=$(curl -s "$1/v1/status")
    echo "$status" | grep -q '"state":"failed"' && return 0
    sleep 0.2
  done
  fail "state did not become failed: $status"
}
# block_apply NAME ROW SQL: blocks apply of migration NAME on a row lock. A session on the target
# locks ROW (e.g. "items WHERE id = 7") FOR UPDATE and holds it for up to 120 s ($locker is its
# psql, killed on exit); SQL, which changes that row, then runs on the source; fails unless one of
# NAME's apply workers waits on the lock within 5 s. unblock_apply ends the holder.
block_apply() {
  "$pgbin/psql" -X -q -d "$dst" -c "BEGIN; SELECT * FROM $2 FOR UPDATE; SELECT pg_sleep(120)" >/dev/null 2>&1 &
  locker=$!
  on_exit 'kill "$locker" 2>/dev/null'
  sleep 0.5
  psql_src "$3"
  local waiting="SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'pgshift_$1_w%'"
  for _ in $(seq 1 50); do [ "$(psql_dst "$waiting")" = 1 ] && break; sleep 0.1; done
  [ "$(psql_dst "$waiting")" = 1 ] || fail "apply is not waiting on the row lock"
}
# unblock_apply: ends block_apply's lock holder (its transaction rolls back); apply goes on.
unblock_apply() {
  psql_dst "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()" >/dev/null
  wait "$locker" 2>/dev/null || true
}
# start_pgbouncer DB PORT [INI_LINES]: a real PgBouncer (transaction pooling, trust auth, admin
# user postgres) on $bouncer_port, with one database entry DB -> 127.0.0.1:PORT (dbname postgres);
# config, users and log in $bdir; $bouncer is its pid; stopped on exit. It refuses to run as root,
# so it runs as postgres then. Extra [pgbouncer] settings go in INI_LINES.
start_pgbouncer() {
  bouncer_port=$(free_port)
  bdir="$work/bouncer"
  mkdir -p "$bdir"
  [ "$EUID" = 0 ] && chown postgres: "$bdir"
  cat > "$bdir/pgbouncer.ini" <<INI
[databases]
$1 = host=127.0.0.1 port=$2 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $bdir/users.txt
admin_users = postgres
pool_mode = transaction
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
${3:-}
INI
  echo '"postgres" ""' > "$bdir/users.txt"
  chmod 644 "$bdir/pgbouncer.ini" "$bdir/users.txt"
  local exe
  exe=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  if [ "$EUID" = 0 ]; then (cd / && runuser -u postgres -- "$exe" -d "$bdir/pgbouncer.ini"); else
    "$exe" -d "$bdir/pgbouncer.ini"; fi || fail "pgbouncer does not start"
  for _ in $(seq 1 50); do [ -s "$bdir/pgbouncer.pid" ] && break; sleep 0.1; done
  bouncer=$(cat "$bdir/pgbouncer.pid") || fail "pgbouncer wrote no pid file: $(tail -5 "$bdir/pgbouncer.log")"
  on_exit 'kill -TERM "$bouncer" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$bouncer" 2>/dev/null || break; sleep 0.1; done'
  for _ in $(seq 1 50); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$bouncer_port" -d "$1" && break; sleep 0.1; done
}
