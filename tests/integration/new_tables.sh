#!/usr/bin/env bash
# Integration (lose nothing): tables created on the source while pgshift streams. A table that
# matches tables.include joins within seconds with every row written before it joined copied and
# every row after it streamed, also while the application writes to it during the join; a table
# pgshift cannot replicate yet (no usable replica identity, missing on the target) is reported in
# status, /readyz, /metrics and the log until it is fixed, then joins the same way.
# Usage: new_tables.sh PGSHIFT_BINARY
set -euo pipefail
source "$(dirname "$0")/daemon-test.sh"

ctl_port=$(free_port)
api="http://127.0.0.1:$ctl_port"
for c in psql_src psql_dst; do $c "CREATE TABLE accounts (id int PRIMARY KEY, v int)"; done
cat > "$work/pgshift.yaml" <<YAML
name: newtab
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
control: {listen: "127.0.0.1:$ctl_port"}
YAML
"$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!
wait_ready "$api" 20 "not streaming"

digest() { echo "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM $1 t"; }
# converged TABLE SECONDS: the table has the same rows on both sides within SECONDS.
converged() {
  local q; q=$(digest "$1")
  for _ in $(seq 1 $(( $2 * 5 ))); do
    [ "$(psql_src "$q" 2>/dev/null)" = "$(psql_dst "$q" 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  echo "source $(psql_src "$q" 2>&1) target $(psql_dst "$q" 2>&1)"
  return 1
}
status() { curl -s "$api/v1/status"; }

# 1. A new table, written to before, during and after it joins.
for c in psql_src psql_dst; do $c "CREATE TABLE later (id int PRIMARY KEY, v text)"; done
psql_src "INSERT INTO later SELECT g, 'before' FROM generate_series(1, 500) g"
for i in $(seq 501 1500); do
  echo "INSERT INTO later VALUES ($i, 'during'); UPDATE later SET v = 'updated $i' WHERE id = $((i - 500));"
  (( i % 50 == 0 )) && echo "SELECT pg_sleep(0.1);"
done > "$work/load.sql"
"$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -d "$src" -f "$work/load.sql" >/dev/null || fail "the load on public.later failed"
[ "$(psql_src "SELECT count(*) FROM later")" = 1500 ] || fail "the load did not commit its rows"
converged later 30 || fail "public.later did not converge: rows written before it joined are missing"
grep -q "table public.later appeared on the source and now replicates" "$work/pgshift.log" || fail "no log line"
psql_src "DELETE FROM later WHERE id % 3 = 0; UPDATE later SET v = 'after' WHERE id % 3 = 1"
converged later 20 || fail "public.later: changes after the join were not streamed"
echo "ok: a table created while streaming joins with the rows written before, during and after it joined"

# 2. A new table without a usable replica identity: reported everywhere, never published.
for c in psql_src psql_dst; do $c "CREATE TABLE newnopk (a int, b text)"; done
psql_src "INSERT INTO newnopk VALUES (1, 'x'), (2, 'y')"
for _ in $(seq 1 50); do status | grep -q 'table public.newnopk has no usable replica identity' && break; sleep 0.2; done
status | grep -q '"tables_not_replicated":\["table public.newnopk has no usable replica identity' ||
  fail "status does not report public.newnopk: $(status)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 503 ] || fail "/readyz is not 503"
curl -s "$api/readyz" | grep -q "public.newnopk" || fail "/readyz does not name public.newnopk"
curl -s "$api/metrics" | grep -x "pgshift_tables_not_replicated 1" >/dev/null || fail "metric is not 1"
grep -q "table public.newnopk has no usable replica identity" "$work/pgshift.log" || fail "not in the log"
psql_src "UPDATE newnopk SET b = 'z' WHERE a = 2; DELETE FROM newnopk WHERE a = 1" ||
  fail "the source refuses writes on public.newnopk"
[ "$(psql_src "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'newnopk'")" = 0 ] || fail "published"
psql_src "ALTER TABLE newnopk REPLICA IDENTITY FULL"
psql_dst "ALTER TABLE newnopk REPLICA IDENTITY FULL"
converged newnopk 20 || fail "public.newnopk did not join after REPLICA IDENTITY FULL"
psql_src "UPDATE newnopk SET b = 'after'"
converged newnopk 20 || fail "public.newnopk: changes after the join were not streamed"
for _ in $(seq 1 25); do curl -s "$api/metrics" | grep -x "pgshift_tables_not_replicated 0" >/dev/null && break; sleep 0.2; done
curl -s "$api/metrics" | grep -x "pgshift_tables_not_replicated 0" >/dev/null || fail "metric not back to 0"
status | grep -q '"tables_not_replicated":\[\]' || fail "status still lists tables: $(status)"
echo "ok: a new table without a replica identity is reported (status, /readyz, metric, log), then joins once fixed"

# 3. A new table the target lacks: reported, then joins with its rows once created there.
psql_src "CREATE TABLE onlysrc (id int PRIMARY KEY, v text); INSERT INTO onlysrc SELECT g, 'x' FROM generate_series(1, 100) g"
for _ in $(seq 1 50); do status | grep -q 'onlysrc is not replicated: it exists on the source but not on the target' && break; sleep 0.2; done
status | grep -q 'onlysrc is not replicated: it exists on the source but not on the target' ||
  fail "status does not report public.onlysrc: $(status)"
psql_src "INSERT INTO onlysrc VALUES (101, 'meanwhile')"
psql_dst "CREATE TABLE onlysrc (id int PRIMARY KEY, v text)"
converged onlysrc 20 || fail "public.onlysrc did not join once created on the target"
echo "ok: a new table missing on the target is reported, then joins with its rows once created there"

converged accounts 5 || fail "public.accounts"
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
daemon=""
echo "new tables: all checks passed"
