#!/usr/bin/env bash
# Initial-copy benchmark: one pgbench database on the source, copied into three empty databases of
# one target cluster, in the same run, one after the other:
#   builtin  PostgreSQL's logical replication table synchronisation (CREATE SUBSCRIPTION with
#            copy_data; the tables are created first from pg_dump --schema-only, as built-in
#            replication needs), timed until every table is 'r' (ready) in pg_subscription_rel
#   dump     pg_dump | psql (schema, rows, then indexes and constraints; one session)
#   pgshift  pgshift run with initial_copy.workers sessions and schema: copy into an empty
#            database, timed from the start of the process until pgshift.copy_runs says done
#            (tables created, rows copied, primary keys built; streaming could start)
# and prints wall time, CPU seconds of the source cluster, the target cluster and the client
# (bench/cpu.sh), and the ratios against pgshift. Every copy is checked against the source
# (row count and an order-independent sum of row hashes per table).
#
# Usage: bench/initial_copy.sh [SCALE]   (default 50: 5,000,000 accounts, about 750 MB). Needs a
# built pgshift (PGSHIFT_BUILD_DIR, default ./build).
# Environment: COPY_WORKERS (default 4) initial_copy.workers of the pgshift run;
#              SYNC_WORKERS (default 2, PostgreSQL's default) max_sync_workers_per_subscription.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scale=${1:-50}
copy_workers=${COPY_WORKERS:-4}
sync_workers=${SYNC_WORKERS:-2}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }
[[ "$scale" =~ ^[0-9]+$ && "$scale" -ge 1 ]] || { echo "SCALE must be a positive integer, got '$scale'"; exit 1; }

PAIR_SOURCE_SETTINGS=(max_wal_size=8GB checkpoint_timeout=1h max_replication_slots=20 max_wal_senders=20)
PAIR_TARGET_SETTINGS=(max_wal_size=8GB checkpoint_timeout=1h max_worker_processes=16
                      max_logical_replication_workers=8 "max_sync_workers_per_subscription=$sync_workers")
source "$root/scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null'
dst_base="host=127.0.0.1 port=$dst_port user=postgres"
psql_db() { "$pgbin/psql" -X -q -A -t -d "$dst_base dbname=$1" -c "$2"; } # DB, SQL
now() { date +%s.%N; }
src_pm=$(head -1 "$work/source/postmaster.pid")
dst_pm=$(head -1 "$work/target/postmaster.pid")
tables="pgbench_accounts pgbench_branches pgbench_history pgbench_tellers"

echo "== source: pgbench -i -s $scale"
"$pgbin/pgbench" -i -q -s "$scale" -d "$src" >/dev/null 2>&1
# pgbench_history has no key; pgshift only publishes tables the source can still update.
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
psql_src "VACUUM ANALYZE"
echo "   $(psql_src "SELECT count(*) FROM pgbench_accounts") accounts, database $(psql_src "SELECT pg_size_pretty(pg_database_size(current_database()))")"
for db in t_builtin t_dump t_pgshift; do psql_db postgres "CREATE DATABASE $db"; done

# measure NAME CLIENT_PID_FILE COMMAND...: runs COMMAND (which must block until the copy is
# complete), printing wall time and the CPU of both clusters and of the client.
results=()
ticks() { "$root/bench/cpu.sh" ticks "$@"; }
hz=$(getconf CLK_TCK)
measure() {
  local name=$1; shift
  psql_src "CHECKPOINT"; psql_db postgres "CHECKPOINT"
  read -r s0 d0 <<<"$(ticks "$src_pm" "$dst_pm")"
  local t0; t0=$(now)
  "$@"
  local t1; t1=$(now)
  read -r s1 d1 <<<"$(ticks "$src_pm" "$dst_pm")"
  local wall; wall=$(echo "$t1 - $t0" | bc -l)
  local scpu dcpu ccpu
  scpu=$(echo "($s1 - $s0) / $hz" | bc -l); dcpu=$(echo "($d1 - $d0) / $hz" | bc -l)
  ccpu=$(cat "$work/client.ticks" 2>/dev/null || echo 0); ccpu=$(echo "$ccpu / $hz" | bc -l)
  rm -f "$work/client.ticks"
  results+=("$name $wall $scpu $dcpu $ccpu")
  printf "   %-8s %7.2f s wall, CPU: source %6.2f s, target %6.2f s, client %6.2f s\n" "$name" "$wall" "$scpu" "$dcpu" "$ccpu"
}

run_builtin() {
  "$pgbin/pg_dump" --schema-only -d "$src" | "$pgbin/psql" -X -q -d "$dst_base dbname=t_builtin" >/dev/null
  psql_db t_builtin "CREATE SUBSCRIPTION bench_sub CONNECTION '$src' PUBLICATION bench_pub WITH (copy_data = true)"
  until [ "$(psql_db t_builtin "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")" = 0 ] &&
        [ "$(psql_db t_builtin "SELECT count(*) FROM pg_subscription_rel")" = 4 ]; do
    sleep 0.1
  done
}
run_dump() {
  # The client is pg_dump and psql: their CPU is what this shell's waited-for children used.
  local before; before=$(awk '{ print $16 + $17 }' /proc/$$/stat)
  "$pgbin/pg_dump" -d "$src" | "$pgbin/psql" -X -q -d "$dst_base dbname=t_dump" >/dev/null
  echo $(( $(awk '{ print $16 + $17 }' /proc/$$/stat) - before )) > "$work/client.ticks"
}
run_pgshift() {
  cat > "$work/pgshift.yaml" <<YAML
name: bench
source: {conninfo: "$src"}
target: {conninfo: "$dst_base dbname=t_pgshift"}
initial_copy: {enabled: true, workers: $copy_workers}
schema: copy
control: {listen: "127.0.0.1:$(free_port)"}
log: {level: info}
YAML
  "$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 & daemon=$!
  until [ "$(psql_db t_pgshift "SELECT state FROM pgshift.copy_runs" 2>/dev/null)" = done ]; do
    kill -0 "$daemon" 2>/dev/null || { echo "pgshift exited"; tail -20 "$work/pgshift.log"; exit 1; }
    sleep 0.1
  done
  ticks "$daemon" > "$work/client.ticks"
}

psql_src "CREATE PUBLICATION bench_pub FOR TABLE $(echo $tables | sed 's/ /, /g')"
echo "== copies (target databases are empty; one at a time)"
measure builtin run_builtin
psql_db t_builtin "ALTER SUBSCRIPTION bench_sub DISABLE"
psql_db t_builtin "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)"
psql_db t_builtin "DROP SUBSCRIPTION bench_sub"
psql_src "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench_sub%' OR slot_name LIKE 'pg_%_sync_%'" >/dev/null
measure dump run_dump
measure pgshift run_pgshift
kill -TERM "$daemon"; wait "$daemon" || true; daemon=""
grep -E "starting|initial copy: [0-9]+ table|initial copy: all|initial copy done|schema: copy|apply: " "$work/pgshift.log" | cut -c12-23,38- | sed "s/^/   pgshift /"

echo "== checking every copy against the source"
check="SELECT string_agg(format('%s %s %s', t, n, h), ' ' ORDER BY t) FROM (
  SELECT 'a' t, count(*) n, sum(hashtext(x::text)::bigint) h FROM pgbench_accounts x UNION ALL
  SELECT 'b', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_branches x UNION ALL
  SELECT 'h', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_history x UNION ALL
  SELECT 't', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_tellers x) s"
want=$(psql_src "$check")
for db in t_builtin t_dump t_pgshift; do
  got=$(psql_db "$db" "$check")
  [ "$got" = "$want" ] || { echo "   $db differs from the source: $got vs $want"; exit 1; }
  pk=$(psql_db "$db" "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname LIKE 'pgbench%' AND indisprimary AND indisvalid")
  echo "   $db: identical to the source, $pk primary keys"
done

echo "== results (scale $scale, initial_copy.workers $copy_workers, max_sync_workers_per_subscription $sync_workers)"
printf "   | %-24s | %7s | %12s | %12s | %12s | %14s |\n" copy "wall s" "source CPU s" "target CPU s" "client CPU s" "pgshift faster"
pg=$(echo "${results[2]}" | awk '{ print $2 }')
for r in "${results[@]}"; do
  read -r name wall scpu dcpu ccpu <<<"$r"
  label=$name
  case $name in
    builtin) label="built-in table sync" ;;
    dump) label="pg_dump | psql" ;;
    pgshift) label="pgshift, $copy_workers sessions" ;;
  esac
  printf "   | %-24s | %7.2f | %12.2f | %12.2f | %12.2f | %13.2fx |\n" "$label" "$wall" "$scpu" "$dcpu" "$ccpu" \
    "$(echo "$wall / $pg" | bc -l)"
done
