#!/usr/bin/env bash
# The demo: two throwaway PostgreSQL servers, a pgbench write load on the source, pgshift
# replicating it live to the target, lag shown while it runs, and both sides compared at the end.
# Cleans up after itself. Options: DEMO_SECONDS (default 30), DEMO_CLIENTS (default 4).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${DEMO_SECONDS:-30}
clients=${DEMO_CLIENTS:-4}

"$here/scripts/install-deps.sh"
echo "== building pgshift"
"$here/scripts/build.sh" >/dev/null
bin="${PGSHIFT_BUILD_DIR:-$here/build}/src/daemon/pgshift"

source "$here/scripts/cluster-pair.sh"
ctl_port=$(free_port)
daemon_pid=""
on_exit 'if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -TERM "$daemon_pid"; wait "$daemon_pid"; fi'

echo "== source on port $src_port, target on port $dst_port"
# pgbench's initial data is deterministic, so initialising both sides gives identical starting rows.
"$pgbin/pgbench" -i -q -s 2 -d "$src" >/dev/null 2>&1
"$pgbin/pgbench" -i -q -s 2 -d "$dst" >/dev/null 2>&1
# pgbench_history has no primary key: pgshift refuses to publish it as it is (the source would
# refuse UPDATE/DELETE on it). It is insert-only, so REPLICA IDENTITY FULL costs nothing.
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"

cat > "$work/pgshift.yaml" <<YAML
name: demo
source:
  conninfo: "$src"
target:
  conninfo: "$dst"
initial_copy:
  enabled: false        # both sides were loaded identically above
control:
  listen: "127.0.0.1:$ctl_port"
log:
  level: info
YAML

echo "== starting pgshift (log: $work/pgshift.log)"
"$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  [ "$(psql_src "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgshift_demo'")" = "t" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/pgshift.log"; echo "pgshift exited"; exit 1; }
  sleep 0.2
done
echo "== pgshift is streaming; running pgbench ($clients clients, ${seconds}s) on the source"

"$pgbin/pgbench" -n -c "$clients" -j 2 -T "$seconds" -d "$src" >"$work/pgbench.log" 2>&1 &
load_pid=$!
api="http://127.0.0.1:$ctl_port"
while kill -0 "$load_pid" 2>/dev/null; do
  printf "   GET /v1/lag: %s   history rows: source %6s, target %6s\n" "$(curl -s "$api/v1/lag")" \
    "$(psql_src "SELECT count(*) FROM pgbench_history")" "$(psql_dst "SELECT count(*) FROM pgbench_history")"
  sleep 3
done
wait "$load_pid"
grep -E "^(tps|number of transactions actually processed)" "$work/pgbench.log" | sed 's/^/   pgbench: /'

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
