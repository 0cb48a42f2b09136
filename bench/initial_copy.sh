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
#              SYNC_WORKERS (default 2, PostgreSQL's default) max_sync_workers_per_subscription;
#              ORDER (default "builtin dump pgshift") the methods and the order they run in (each
#              later one finds more of the earlier ones' writes still in the page cache);
#              SETTLE (default 40) seconds of idle between loading the source and the first copy;
#              ROUNDS (default 3) copies per method, interleaved (see below);
#              INDEXES (default 0) secondary indexes on pgbench_accounts, built by every method
#              after the rows;
#              LOG_LEVEL (default info) pgshift's log level, KEEP_LOG a file to copy the log of
#              the last pgshift run to (its start-up timeline, with LOG_LEVEL=debug).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scale=${1:-50}
copy_workers=${COPY_WORKERS:-4}
sync_workers=${SYNC_WORKERS:-2}
order=${ORDER:-builtin dump pgshift}
settle=${SETTLE:-40}
rounds=${ROUNDS:-3}
indexes=${INDEXES:-0}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }
[[ "$scale" =~ ^[0-9]+$ && "$scale" -ge 1 ]] || { echo "SCALE must be a positive integer, got '$scale'"; exit 1; }

PAIR_SOURCE_SETTINGS=(max_wal_size=8GB checkpoint_timeout=1h max_replication_slots=20 max_wal_senders=20)
PAIR_TARGET_SETTINGS=(max_wal_size=8GB min_wal_size=4GB checkpoint_timeout=1h max_worker_processes=16
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
# Secondary indexes on pgbench_accounts (INDEXES, default 0): each method builds them after the rows.
index_columns=(bid abalance filler aid)
for ((i = 1; i <= indexes; i++)); do
  psql_src "CREATE INDEX pgbench_accounts_i$i ON pgbench_accounts (${index_columns[(i - 1) % 4]})"
done
psql_src "VACUUM ANALYZE"
echo "   $(psql_src "SELECT count(*) FROM pgbench_accounts") accounts, database $(psql_src "SELECT pg_size_pretty(pg_database_size(current_database()))")"
# The target's WAL is pre-allocated before anything is measured: a server creates each new
# 16 MB segment by writing zeros to it (wal_init_zero) and later recycles old ones, so without
# this the first method would write its WAL twice (measured: pgshift's COPY 7.3-8.3 s when it
# ran first, 5.9-6.3 s after the others had run). 100 segments cover one method's WAL; the
# checkpoint keeps them (min_wal_size) for each method's run.
psql_db postgres "DO \$\$ BEGIN FOR i IN 1..100 LOOP
  PERFORM pg_logical_emit_message(false, 'pgshift-bench', 'warm-up'); PERFORM pg_switch_wal();
END LOOP; END \$\$"
psql_db postgres "CHECKPOINT"

# measure NAME CLIENT_PID_FILE COMMAND...: runs COMMAND (which must block until the copy is
# complete), printing wall time and the CPU of both clusters and of the client.
results=()
ticks() { "$root/bench/cpu.sh" ticks "$@"; }
hz=$(getconf CLK_TCK)
measure() {
  local name=$1; shift
  psql_src "CHECKPOINT"; psql_db postgres "CHECKPOINT"; sync
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
  results+=("$round $name $wall $scpu $dcpu $ccpu")
  printf "   %-8s %7.2f s wall, CPU: source %6.2f s, target %6.2f s, client %6.2f s\n" "$name" "$wall" "$scpu" "$dcpu" "$ccpu"
}

# poll_until DB SQL EXPECTED [PID]: runs SQL every 0.1 s until it prints EXPECTED, over one psql
# session and without forking (a psql, a backend and a sleep started ten times a second took
# about 14 % of this 2-core machine's CPU, which the methods that are polled paid and
# pg_dump | psql did not). Errors (a table not created yet) count as "not yet". Returns 1
# when PID exits first.
poll_until() {
  local db=$1 sql=$2 expected=$3 pid=${4:-} line pause
  exec {pause}<> <(:) # a pipe nobody writes: `read -t` on it sleeps without a fork
  coproc POLL { "$pgbin/psql" -X -q -A -t -d "$dst_base dbname=$db" 2>/dev/null; }
  while :; do
    printf '%s;\nSELECT %s;\n' "$sql" "'.'" >&"${POLL[1]}"
    line=""
    while read -r -t 30 l <&"${POLL[0]}" && [ "$l" != . ]; do line=$l; done
    [ "$line" = "$expected" ] && break
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then exec {POLL[1]}>&-; return 1; fi
    read -r -t 0.1 -u "$pause" _ || true
  done
  exec {POLL[1]}>&- {pause}>&-
  wait "$POLL_PID" 2>/dev/null || true
}

run_builtin() {
  "$pgbin/pg_dump" --schema-only -d "$src" | "$pgbin/psql" -X -q -d "$dst_base dbname=t_builtin" >/dev/null
  psql_db t_builtin "CREATE SUBSCRIPTION bench_sub CONNECTION '$src' PUBLICATION bench_pub WITH (copy_data = true)"
  poll_until t_builtin "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) = 4 FROM pg_subscription_rel" t
}
run_dump() {
  # The client is pg_dump and psql: their CPU is what this shell's waited-for children used.
  local before; before=$(awk '{ print $16 + $17 }' /proc/$$/stat)
  "$pgbin/pg_dump" -d "$src" | "$pgbin/psql" -X -q -d "$dst_base dbname=t_dump" >/dev/null
  echo $(( $(awk '{ print $16 + $17 }' /proc/$$/stat) - before )) > "$work/client.ticks"
}
run_pgshift() {
  cat > "$work/pgshift.yaml" <<YAML
name: bench$round
source: {conninfo: "$src"}
target: {conninfo: "$dst_base dbname=t_pgshift"}
initial_copy: {enabled: true, workers: $copy_workers}
schema: copy
control: {listen: "127.0.0.1:$(free_port)"}
log: {level: ${LOG_LEVEL:-info}}
YAML
  "$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 & daemon=$!
  poll_until t_pgshift "SELECT state FROM pgshift.copy_runs" done "$daemon" ||
    { echo "pgshift exited"; tail -20 "$work/pgshift.log"; exit 1; }
  ticks "$daemon" > "$work/client.ticks"
  [ -z "${KEEP_LOG:-}" ] || cp "$work/pgshift.log" "$KEEP_LOG"
}

psql_src "CREATE PUBLICATION bench_pub FOR TABLE $(echo $tables | sed 's/ /, /g')"
check="SELECT string_agg(format('%s %s %s', t, n, h), ' ' ORDER BY t) FROM (
  SELECT 'a' t, count(*) n, sum(hashtext(x::text)::bigint) h FROM pgbench_accounts x UNION ALL
  SELECT 'b', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_branches x UNION ALL
  SELECT 'h', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_history x UNION ALL
  SELECT 't', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_tellers x) s"
want=$(psql_src "$check")
# check_copy DB: the copy equals the source (count and hash sum per table, primary keys built).
check_copy() {
  local got pk
  got=$(psql_db "$1" "$check")
  [ "$got" = "$want" ] || { echo "   $1 differs from the source: $got vs $want"; exit 1; }
  pk=$(psql_db "$1" "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname LIKE 'pgbench%' AND indisprimary AND indisvalid")
  [ "$pk" = 3 ] || { echo "   $1 has $pk of 3 primary keys"; exit 1; }
  local ix; ix=$(psql_db "$1" "SELECT count(*) FROM pg_index WHERE indrelid = 'pgbench_accounts'::regclass AND indisvalid")
  [ "$ix" = $((indexes + 1)) ] || { echo "   $1 has $ix of $((indexes + 1)) indexes on pgbench_accounts"; exit 1; }
}

# Then a pause: measured here, the first method timed right after the load ran its COPY about a
# quarter slower (pgshift first: 7.1-8.3 s; after 40 s idle or after the other methods: 5.9-6.3 s).
# Neither a `sync` nor pre-allocated WAL removed that; an idle pause does.
echo "== settling for ${settle} s"
sleep "$settle"
# Rounds: every method once per round, in ORDER rotated by one each round, so that each method
# runs in each position and a slow spell of the machine (seen here: the same copy 30 % slower,
# CPU seconds included, for a minute) hits all methods alike. Each copy goes into a new
# database, is checked against the source, and is dropped.
methods=($order)
for ((round = 1; round <= rounds; round++)); do
  echo "== round $round of $rounds (target databases are empty; one copy at a time)"
  for ((i = 0; i < ${#methods[@]}; i++)); do
    method=${methods[(i + round - 1) % ${#methods[@]}]}
    db=t_$method
    psql_db postgres "CREATE DATABASE $db"
    case $method in
      builtin)
        measure builtin run_builtin
        psql_db $db "ALTER SUBSCRIPTION bench_sub DISABLE"
        psql_db $db "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)"
        psql_db $db "DROP SUBSCRIPTION bench_sub"
        psql_src "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench_sub%' OR slot_name LIKE 'pg_%_sync_%'" >/dev/null ;;
      dump) measure dump run_dump ;;
      pgshift)
        measure pgshift run_pgshift
        kill -TERM "$daemon"; wait "$daemon" || true; daemon=""
        [ "$round" = 1 ] && grep -E "starting|initial copy: [0-9]+ table|initial copy: all|initial copy done|schema: copy|apply: " \
          "$work/pgshift.log" | cut -c12-23,38- | sed "s/^/            /"
        psql_src "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'pgshift_bench%' AND NOT active" >/dev/null ;;
      *) echo "ORDER: unknown method '$method' (builtin, dump, pgshift)"; exit 1 ;;
    esac
    check_copy $db
    psql_db postgres "DROP DATABASE $db"
  done
done
echo "== every copy was identical to the source, with its 3 primary keys"

echo "== results (scale $scale, initial_copy.workers $copy_workers, max_sync_workers_per_subscription $sync_workers, $rounds round(s))"
# Per method: the median of its rounds (wall and each CPU column, each its own median), the
# fastest round, and "pgshift faster": the median over the rounds of this method's wall time
# divided by pgshift's in the same round.
printf '%s\n' "${results[@]}" | awk -v workers="$copy_workers" '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { r = $1; m = $2; if (!(m in n)) order[++k] = m; i = ++n[m]
    wall[m, i] = $3; sc[m, i] = $4; dc[m, i] = $5; cc[m, i] = $6; w[m, r] = $3; rounds[r] = 1 }
  END {
    label["builtin"] = "built-in table sync"; label["dump"] = "pg_dump | psql"
    label["pgshift"] = "pgshift, " workers " sessions"
    printf "   | %-24s | %13s | %10s | %12s | %12s | %12s | %14s |\n", "copy", "median wall s", "fastest s",
      "source CPU s", "target CPU s", "client CPU s", "pgshift faster"
    for (x = 1; x <= k; x++) {
      m = order[x]; c = n[m]
      for (i = 1; i <= c; i++) { a1[i] = wall[m, i]; a2[i] = sc[m, i]; a3[i] = dc[m, i]; a4[i] = cc[m, i] }
      mw = median(a1, c); fastest = a1[1]
      ms = median(a2, c); md = median(a3, c); mc = median(a4, c)
      q = 0; for (r in rounds) if ((m, r) in w && ("pgshift", r) in w) ratio[++q] = w[m, r] / w["pgshift", r]
      printf "   | %-24s | %13.2f | %10.2f | %12.2f | %12.2f | %12.2f | %13s |\n", label[m], mw, fastest, ms, md, mc,
        q ? sprintf("%.2fx", median(ratio, q)) : "-"
    }
  }'
