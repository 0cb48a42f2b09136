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

# 4. Do no harm: a published table loses its replica identity (its primary key dropped), so the source
# refuses the application's UPDATE and DELETE on it. pgshift removes it from the publication within
# seconds, reports it, and copies it anew once its identity is back and its target table is emptied.
psql_src "ALTER TABLE later DROP CONSTRAINT later_pkey"
refused=0; accepted=""
for _ in $(seq 1 100); do
  if psql_src "UPDATE later SET v = 'no identity' WHERE id = 2" 2>/dev/null; then accepted=1; break; fi
  refused=$((refused + 1)); sleep 0.1
done
[ "$refused" -gt 0 ] || fail "the source never refused UPDATE on public.later (the test proves nothing)"
[ -n "$accepted" ] || fail "the source still refuses UPDATE on public.later after 10 s"
psql_src "DELETE FROM later WHERE id = 4" || fail "the source refuses DELETE on public.later"
[ "$(psql_src "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'later'")" = 0 ] || fail "still published"
grep -q "table public.later lost its replica identity while published" "$work/pgshift.log" || fail "not in the log"
for _ in $(seq 1 50); do status | grep -q 'table public.later has no usable replica identity' && break; sleep 0.2; done
status | grep -q 'table public.later has no usable replica identity' || fail "status does not report public.later: $(status)"
psql_src "ALTER TABLE later ADD PRIMARY KEY (id)"
for _ in $(seq 1 50); do status | grep -q 'public.later is not replicated: the target table already holds rows' && break; sleep 0.2; done
status | grep -q 'public.later is not replicated: the target table already holds rows.*copied anew' ||
  fail "status does not say public.later's target copy must be emptied: $(status)"
psql_dst "TRUNCATE later"
converged later 30 || fail "public.later did not join again once fixed and emptied on the target"
psql_src "UPDATE later SET v = 'rejoined' WHERE id % 5 = 0"
converged later 20 || fail "public.later: changes after joining again were not streamed"
echo "ok: a published table that loses its replica identity leaves the publication within seconds (the source takes its writes again), then joins again"

# 5. The same while pgshift is stopped: the next start is not refused for it, and removes it.
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
psql_src "ALTER TABLE later DROP CONSTRAINT later_pkey"
psql_src "UPDATE later SET v = 'x' WHERE id = 5" 2>/dev/null && fail "the source accepts UPDATE on a published table without identity (the test proves nothing)"
"$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!
accepted=""
for _ in $(seq 1 150); do
  if psql_src "UPDATE later SET v = 'no identity again' WHERE id = 5" 2>/dev/null; then accepted=1; break; fi
  kill -0 "$daemon" 2>/dev/null || fail "pgshift refused to start: $(tail -3 "$work/pgshift.log")"
  sleep 0.1
done
[ -n "$accepted" ] || fail "after a restart the source still refuses UPDATE on public.later"
psql_src "INSERT INTO accounts VALUES (424242, 1)"
converged accounts 20 || fail "public.accounts is not replicated after the restart"
grep -q "table public.later lost its replica identity while published, so the source refuses the application's UPDATE and DELETE on it: removing it" "$work/pgshift.log" ||
  fail "the start does not say why it goes on"
echo "ok: after a restart, a published table that lost its identity is removed from the publication and the rest replicates"

# 6. A table created while pgshift is stopped joins like one created while it runs: with its rows
# (adding it to the publication at the start would stream only the rows written after that).
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
for c in psql_src psql_dst; do $c "CREATE TABLE whiledown (id int PRIMARY KEY, v text)"; done
psql_src "INSERT INTO whiledown SELECT g, 'written while pgshift was stopped' FROM generate_series(1, 300) g"
"$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!
converged whiledown 30 || fail "public.whiledown: the rows written while pgshift was stopped are missing"
psql_src "UPDATE whiledown SET v = 'after' WHERE id % 7 = 0"
converged whiledown 20 || fail "public.whiledown: changes after the start were not streamed"
echo "ok: a table created while pgshift was stopped joins with its rows at the next start"

converged accounts 5 || fail "public.accounts"
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
daemon=""
echo "new tables: all checks passed"
