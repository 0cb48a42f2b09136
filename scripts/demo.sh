#!/usr/bin/env bash
# The demo: a whole migration between two throwaway PostgreSQL servers. The source already holds
# data (pgbench, scale DEMO_SCALE) and the target is empty; a pgbench write load runs on the source
# the whole time; pgshift creates the tables on the target (schema: copy), copies the existing rows
# under one snapshot in parallel sessions while the load goes on, then streams every change,
# showing copy progress and then lag; both sides are compared. Then a cutover while pgbench writes
# (the target becomes the primary and its writes stream back to the source), a rollback, and
# `pgshift finish`.
# Cleans up after itself. Options: DEMO_SECONDS (default 30), DEMO_CLIENTS (default 4),
# DEMO_SCALE (default 10, 1,000,000 accounts, about 150 MB).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${DEMO_SECONDS:-30}
clients=${DEMO_CLIENTS:-4}
scale=${DEMO_SCALE:-10}

"$here/scripts/install-deps.sh"
echo "== building pgshift"
"$here/scripts/build.sh" >/dev/null
bin="${PGSHIFT_BUILD_DIR:-$here/build}/src/daemon/pgshift"

source "$here/scripts/cluster-pair.sh"
ctl_port=$(free_port)
daemon_pid=""
on_exit 'if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -TERM "$daemon_pid"; wait "$daemon_pid"; fi'

echo "== source on port $src_port, target on port $dst_port"
echo "== loading the source (pgbench scale $scale); the target stays empty"
"$pgbin/pgbench" -i -q -s "$scale" -d "$src" >/dev/null 2>&1
# pgbench_history has no primary key: pgshift refuses to publish it as it is (the source would
# refuse UPDATE/DELETE on it). It is insert-only, so REPLICA IDENTITY FULL costs nothing.
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
echo "   source: $(psql_src "SELECT count(*) FROM pgbench_accounts") accounts, \
$(psql_src "SELECT pg_size_pretty(pg_database_size(current_database()))"); target tables: \
$(psql_dst "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")"

cat > "$work/pgshift.yaml" <<YAML
name: demo
source:
  conninfo: "$src"
target:
  conninfo: "$dst"
initial_copy:
  enabled: true         # copy the rows the source holds, then stream
  workers: 2            # parallel COPY sessions under one snapshot
schema: copy            # create the missing tables on the target (indexes after the rows)
control:
  listen: "127.0.0.1:$ctl_port"
log:
  level: info
YAML

echo "== running pgbench ($clients clients, ${seconds}s) on the source, from now on"
"$pgbin/pgbench" -n -c "$clients" -j 2 -T "$seconds" -d "$src" >"$work/pgbench.log" 2>&1 &
load_pid=$!
sleep 1
echo "== starting pgshift (log: $work/pgshift.log)"
"$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 &
daemon_pid=$!
api="http://127.0.0.1:$ctl_port"
# One line of GET /v1/status: the state, the copy's progress while copying, then the lag.
status_line() {
  curl -s "$api/v1/status" | /usr/bin/python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
except ValueError:
    print("(starting)"); sys.exit()
c = s["initial_copy"]
line = "state %-9s" % s["state"]
if s["state"] == "copying":
    eta = c.get("eta_seconds")
    line += "  copy: %d/%d tables, %3.0f%%, %.1f MiB/s%s" % (c["tables_done"], c["tables_total"], c["percent"],
        c["bytes_per_second"] / 1048576, "" if eta is None else ", about %.0f s left" % eta)
else:
    line += "  lag: %d bytes, %.2f s" % (s["lag"]["bytes"], s["lag"]["seconds"])
print(line)' 2>/dev/null || echo "(starting)"
}
while kill -0 "$load_pid" 2>/dev/null; do
  kill -0 "$daemon_pid" 2>/dev/null || { tail -30 "$work/pgshift.log"; echo "pgshift exited"; exit 1; }
  printf "   %s   history rows: source %6s, target %6s\n" "$(status_line)" \
    "$(psql_src "SELECT count(*) FROM pgbench_history")" \
    "$(psql_dst "SELECT count(*) FROM pgbench_history" 2>/dev/null || echo -)"
  sleep 2
done
wait "$load_pid"
grep -E "^(tps|number of transactions actually processed)" "$work/pgbench.log" | sed 's/^/   pgbench: /'
echo "== pgshift's log about the copy:"
grep -E "initial copy|schema: copy" "$work/pgshift.log" | grep -v "table .* done" | sed 's/^[^]]*] /   /'

echo "== load finished; waiting for the target to catch up"
digest="SELECT string_agg(format('%s rows=%s md5=%s', t, n, d), E'\n' ORDER BY t) FROM (
  SELECT 'pgbench_accounts' t, count(*) n, md5(string_agg(x::text, ',' ORDER BY x::text)) d FROM pgbench_accounts x UNION ALL
  SELECT 'pgbench_branches', count(*), md5(string_agg(x::text, ',' ORDER BY x::text)) FROM pgbench_branches x UNION ALL
  SELECT 'pgbench_tellers', count(*), md5(string_agg(x::text, ',' ORDER BY x::text)) FROM pgbench_tellers x UNION ALL
  SELECT 'pgbench_history', count(*), md5(string_agg(x::text, ',' ORDER BY x::text)) FROM pgbench_history x) s"
for _ in $(seq 1 120); do
  a=$(psql_src "$digest"); b=$(psql_dst "$digest")
  [ "$a" = "$b" ] && break
  sleep 1
done
printf "   GET /v1/lag: %s\n" "$(curl -s "$api/v1/lag")"
echo "== pgshift status (GET /v1/status):"
"$bin" status --url "$api" | sed "s/^/   /"
echo "== source:"; echo "$a" | sed 's/^/   /'
echo "== target:"; echo "$b" | sed 's/^/   /'
if [ "$a" = "$b" ]; then
  echo "== converged: every table is identical on both sides"
else
  echo "== NOT converged; pgshift log:"; tail -50 "$work/pgshift.log"; exit 1
fi

# converge WHY: waits until both servers hold the same rows (ordered digests), else fails.
converge() {
  for _ in $(seq 1 120); do
    a=$(psql_src "$digest"); b=$(psql_dst "$digest")
    [ "$a" = "$b" ] && { echo "   converged: $1"; return 0; }
    sleep 0.5
  done
  echo "== NOT converged ($1); pgshift log:"; tail -50 "$work/pgshift.log"; exit 1
}
# One line out of the operation's JSON: phase, write downtime, each phase's duration.
summary() {
  tail -1 | /usr/bin/python3 -c '
import json, sys
o = json.load(sys.stdin)
print("   %s %s: write downtime %.3f s (%s)" % (o["id"], o["phase"], o["write_downtime_seconds"] or 0,
      ", ".join("%s %.0f ms" % (p["phase"], p["seconds"] * 1000) for p in o["phases"])))
if o.get("error"): print("   error:", o["error"])'
}
direction() { curl -s "$api/v1/status" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["direction"])'; }

echo "== cutover while pgbench writes to the source: fence the source, drain, copy sequences, verify,"
echo "   reverse stream (pgshift cutover --wait)"
"$pgbin/pgbench" -n -c 2 -T 4 -d "$src" >"$work/pgbench-cutover.log" 2>&1 &
cutover_load=$!
sleep 2
"$bin" cutover --wait --url "$api" | summary
wait "$cutover_load" || true  # pgbench's clients stop at the fence's error: the application moves
echo "   direction: $(direction)"
echo "   a write on the old primary now: $(psql_src "UPDATE pgbench_branches SET bbalance = 0 WHERE bid = 1" 2>&1 | head -1)"
echo "== the application writes to the target (pgbench 5 s there); pgshift streams it back to the source"
"$pgbin/pgbench" -n -c "$clients" -j 2 -T 5 -d "$dst" 2>&1 | grep -E "^tps" | sed 's/^/   pgbench on the target: /'
converge "the source has every write made on the target"
echo "== rollback (pgshift rollback --wait): the source is the primary again"
"$bin" rollback --wait --url "$api" | summary
echo "   direction: $(direction)"
"$pgbin/pgbench" -n -c "$clients" -j 2 -T 3 -d "$src" 2>&1 | grep -E "^tps" | sed 's/^/   pgbench on the source: /'
converge "the target has every write made on the source again"
echo "== finish (pgshift finish): slots, publications and origins dropped on both servers"
"$bin" finish --url "$api" | sed 's/^/   /'
wait "$daemon_pid" && echo "   pgshift exited 0"
echo "   slots left: source $(psql_src "SELECT count(*) FROM pg_replication_slots"), target $(psql_dst "SELECT count(*) FROM pg_replication_slots")"
