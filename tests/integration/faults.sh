#!/usr/bin/env bash
# Integration (do no harm): faults an operator meets. JSON logs stay JSON when a server sends
# notices (an immediate shutdown); a full spill directory keeps the daemon up, named in the error
# and counted in a metric, and apply continues once there is room; /readyz names only the side
# that is down; a resolved error stays as last_error but is no longer current; SIGTERM is taken
# while reconnecting.
# Usage: faults.sh PGSHIFT_BINARY
set -euo pipefail
command -v python3 >/dev/null || { echo "python3 not installed: skipped"; exit 77; }
source "$(dirname "$0")/daemon-test.sh"
spill="$work/spill"
mkdir -p "$spill"
on_exit 'mountpoint -q "$spill" && umount "$spill"'
pg_ctl_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$pgbin/pg_ctl" "$@"; else "$pgbin/pg_ctl" "$@"; fi
}

ctl_port=$(free_port)
api="http://127.0.0.1:$ctl_port"
for c in psql_src psql_dst; do $c "CREATE TABLE t (id int PRIMARY KEY, v text)"; done
# Spill files on a 1 MiB tmpfs when we may mount one (root); else in the work directory.
can_mount=0
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m tmpfs "$spill" 2>/dev/null; then can_mount=1; fi
cat > "$work/pgshift.yaml" <<YAML
name: faults
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
apply: {max_queue_bytes: 1048576, spill_dir: "$spill"}
control: {listen: "127.0.0.1:$ctl_port"}
reconnect: {min_delay_seconds: 0.2, max_delay_seconds: 1}
log: {format: json}
YAML
start() { "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!; }
digest="SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') FROM t"
converged() {
  for _ in $(seq 1 $(( $1 * 5 ))); do [ "$(psql_src "$digest")" = "$(psql_dst "$digest" 2>/dev/null)" ] && return 0; sleep 0.2; done
  return 1
}
start
wait_ready "$api" 30 "not ready"

# 1. Notices from a server (an immediate shutdown warns every client) are logged as JSON.
psql_src "INSERT INTO t VALUES (1, 'one')"
converged 20 || fail "no convergence before the restart"
"$root/scripts/pgcluster.sh" restart "$work/target" immediate
psql_src "INSERT INTO t VALUES (2, 'two')"
converged 60 || fail "no convergence after the target's immediate restart"
grep -q 'server WARNING: terminating connection due to immediate shutdown command' "$work/pgshift.log" ||
  fail "the shutdown notice was not logged through the logger"
python3 - "$work/pgshift.log" <<'PY' || fail "the log is not JSON lines"
import json, sys
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    try:
        json.loads(line)
    except ValueError:
        sys.exit(f"line {n} is not JSON: {line!r}")
PY
echo "ok: with log.format json every log line is JSON, server notices included"

# 2. A transaction larger than the spill directory's free space.
if [ "$can_mount" = 1 ]; then
  psql_src "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(100, 10099) g"  # ~7 MB
  for _ in $(seq 1 100); do curl -s "$api/metrics" | grep '^pgshift_spill_errors_total [1-9]' >/dev/null && break; sleep 0.2; done
  curl -s "$api/metrics" | grep '^pgshift_spill_errors_total [1-9]' >/dev/null || fail "no spill error counted"
  status=$(curl -s "$api/v1/status")
  echo "$status" | grep -q "could not write the spill file in $spill (apply.spill_dir): No space left on device" ||
    fail "the error does not name the spill directory: $status"
  sleep 2
  kill -0 "$daemon" || fail "the daemon exited on a full spill directory"
  mount -o remount,size=64m "$spill"
  converged 60 || fail "no convergence after the spill directory got room"
  echo "ok: a full spill directory keeps the daemon up (named in last_error, counted), apply continues with room"
else
  echo "skipped: a full spill directory (needs root to mount a small tmpfs)"
fi

# 3. Only the target is down: /readyz names the target, not the source.
pg_ctl_as_owner stop -D "$work/target" -m fast -w >/dev/null
ready=""
for _ in $(seq 1 50); do
  ready=$(curl -s "$api/readyz")
  echo "$ready" | grep -q "target not connected" && break
  sleep 0.2
done
echo "$ready" | grep -q "target not connected" || fail "/readyz does not say the target is down: $ready"
echo "$ready" | grep -q "source not connected" && fail "/readyz says the source is down: $ready"
# The session ends when apply next needs the target: give it a change to apply.
psql_src "INSERT INTO t VALUES (3, 'while the target is down')"
for _ in $(seq 1 75); do curl -s "$api/v1/status" | grep -q '"current_error":"target: ' && break; sleep 0.2; done
curl -s "$api/v1/status" | grep -q '"current_error":"target: ' || fail "no current error: $(curl -s "$api/v1/status")"
echo "ok: with only the target down, /readyz names the target alone"

pg_ctl_as_owner start -D "$work/target" -l "$work/target/server.log" -w >/dev/null
wait_ready "$api" 30 "not ready"
status=$(curl -s "$api/v1/status")
echo "$status" | grep -q '"current_error":""' || fail "the resolved error is still current: $status"
echo "$status" | grep -q '"last_error":"target: ' || fail "the last error is gone: $status"
echo "$status" | grep -q '"last_error_at":"20' || fail "no last_error_at: $status"
echo "ok: once streaming again the error is no longer current, and stays as last_error with its time"

# 4. SIGTERM while reconnecting to a target that is down.
pg_ctl_as_owner stop -D "$work/target" -m fast -w >/dev/null
sleep 2
kill -TERM "$daemon"
code=0
for _ in $(seq 1 30); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
kill -0 "$daemon" 2>/dev/null && fail "SIGTERM not taken within 3 s while reconnecting"
wait "$daemon" || code=$?
daemon=""
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
pg_ctl_as_owner start -D "$work/target" -l "$work/target/server.log" -w >/dev/null
echo "ok: SIGTERM while reconnecting stops the daemon at once"
echo "faults: all checks passed"
