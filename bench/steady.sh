#!/usr/bin/env bash
# Steady-state benchmark: a paced write load on the source while a consumer keeps up, and the delay
# from each source row's creation to its visibility on the target, for pgshift and for PostgreSQL's
# built-in logical replication in the same run.
#
# Each transaction (pgbench, paced with --rate; one statement, prepared, so that the source's own
# backends leave CPU to the rest) updates one pgbench account and inserts one probe
# row whose created_at is clock_timestamp() on the source. A sampler on the target (a procedure in
# its own session) reads max(probe.id) about once a millisecond and records the time each new
# maximum became visible; a probe row's delay is the time of the first sample that saw its id (or a
# later one), minus its created_at (one machine, one clock): from the row's creation on the source to
# its visibility on the target, to within a sample interval (about 1 ms, the same for every
# consumer; ids are taken in creation order and four clients commit them in nearly that order).
# The target's commit timestamps cannot serve: both consumers record the source's commit time
# with their replication origin (pg_replication_origin_xact_setup), so they would show the
# source's own commit latency, not replication's (what this script measured until 2026-12-02).
# Printed: p50, p99 and max per consumer and rate, and the CPU seconds of the source cluster, the
# target cluster (sampler included) and pgshift during the run (bench/cpu.sh).
#
# Consumers run one at a time, each from its own slot created just before its load (the other
# consumer is not running), into its own copy of the target database.
#
# Usage: bench/steady.sh [SECONDS] [RATES]   (defaults 30, "1000 3000"). Needs a built pgshift.
# Environment: WORKERS=4 (pgshift's apply.workers), SCALE=10 (pgbench scale), PGSHIFT_NICE=N (start
# pgshift under nice -n N), TIMELINE=1 (also print each run's probe delays per 250 ms).
#
# pgshift runs in a session of its own (setsid), as it does under systemd: Linux's scheduler
# (autogroup, on by default) shares the CPU between sessions first, so as a child of this script
# pgshift would share one session's share with the pgbench clients, while both servers (started
# by pg_ctl, each in its own session) and built-in replication's apply worker (a target backend)
# do not. On this 2-core machine at saturation that alone tripled pgshift's p99 (27-62 ms against
# 12 ms in its own session, 2026-12-01).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
rates=${2:-1000 3000}
workers=${WORKERS:-4}
scale=${SCALE:-10}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 5 ]] || { echo "SECONDS must be a number >= 5, got '$seconds'"; exit 1; }
for r in $rates; do [[ "$r" =~ ^[0-9]+$ ]] || { echo "rates are numbers, got '$r'"; exit 1; }; done

PAIR_SOURCE_SETTINGS=(max_wal_size=4GB max_replication_slots=20 max_wal_senders=20 checkpoint_timeout=1h)
PAIR_TARGET_SETTINGS=(max_wal_size=4GB max_replication_slots=100 checkpoint_timeout=1h)
source "$root/scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null'
dst_base="host=127.0.0.1 port=$dst_port user=postgres"
psql_db() { "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$dst_base dbname=$1" -c "$2"; } # DB SQL
now() { date +%s.%N; }

probe_sql="CREATE TABLE probe (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL)"
"$pgbin/pgbench" -i -q -s "$scale" -d "$src" >/dev/null 2>&1
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
psql_src "$probe_sql"
psql_dst "CREATE DATABASE t_base"
"$pgbin/pgbench" -i -q -s "$scale" -d "$dst_base dbname=t_base" >/dev/null 2>&1
psql_db t_base "$probe_sql"
# The sampler (see the top of this file): runs until a row appears in sampler_stop.
psql_db t_base "CREATE UNLOGGED TABLE seen (at timestamptz NOT NULL, max_id bigint NOT NULL);
  CREATE INDEX ON seen (max_id);
  CREATE UNLOGGED TABLE sampler_stop (at timestamptz);
  CREATE PROCEDURE sample() LANGUAGE plpgsql AS \$\$
  DECLARE m bigint; last bigint := 0; stop boolean;
  BEGIN
    SET synchronous_commit = off;
    LOOP
      stop := EXISTS (SELECT FROM sampler_stop); -- then one last sample, after the stop
      SELECT coalesce(max(id), 0) INTO m FROM probe;
      IF m > last THEN INSERT INTO seen VALUES (clock_timestamp(), m); last := m; END IF;
      EXIT WHEN stop;
      COMMIT; -- no long transaction holding back the target's horizon
      PERFORM pg_sleep(0.001);
    END LOOP;
  END \$\$"
psql_src "VACUUM ANALYZE"

cat > "$work/load.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
WITH u AS (UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid RETURNING aid)
INSERT INTO probe (created_at) SELECT clock_timestamp() FROM u;
SQL

hz=$(getconf CLK_TCK)
src_pm=$(head -n 1 "$work/source/postmaster.pid")
dst_pm=$(head -n 1 "$work/target/postmaster.pid")
ctl_port=$(free_port)
declare -A p50 p99 pmax rows tps cpu_s cpu_t cpu_o

# Each probe row's delay in ms, and its created_at: the first sample that saw its id.
delays="SELECT p.created_at, extract(epoch FROM v.at - p.created_at) * 1000 AS d FROM probe p
  CROSS JOIN LATERAL (SELECT at FROM seen WHERE max_id >= p.id ORDER BY max_id LIMIT 1) v"
caught_up() { # slot end_lsn
  [ "$(psql_src "SELECT confirmed_flush_lsn >= '$2' FROM pg_replication_slots WHERE slot_name = '$1'")" = "t" ]
}
measure() { # key db slot consumer_pid
  local key=$1 db=$2 slot=$3 pid=$4 c0 c1 out end
  "$pgbin/psql" -X -q -d "$dst_base dbname=$db" -c "CALL sample()" & local sampler=$!
  read -r -a c0 <<< "$("$root/bench/cpu.sh" ticks "$src_pm" "$dst_pm" "$pid")"
  out=$("$pgbin/pgbench" -n -M prepared -c 4 -j 2 -T "$seconds" -R "$rate" -f "$work/load.sql" -D scale="$scale" -d "$src" 2>&1)
  tps[$key]=$(echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1)
  end=$(psql_src "SELECT pg_current_wal_lsn()")
  for _ in $(seq 1 600); do caught_up "$slot" "$end" && break; sleep 0.1; done
  caught_up "$slot" "$end" || { echo "$key did not catch up"; exit 1; }
  read -r -a c1 <<< "$("$root/bench/cpu.sh" ticks "$src_pm" "$dst_pm" "$pid")"
  psql_db "$db" "INSERT INTO sampler_stop VALUES (now())"
  wait "$sampler" || { echo "$key: the sampler failed"; exit 1; }
  cpu_s[$key]=$(printf %.2f "$(echo "scale=4; (${c1[0]} - ${c0[0]}) / $hz" | bc)")
  cpu_t[$key]=$(printf %.2f "$(echo "scale=4; (${c1[1]} - ${c0[1]}) / $hz" | bc)")
  cpu_o[$key]=$([ "$pid" = 0 ] && echo "(in target)" || printf %.2f "$(echo "scale=4; (${c1[2]} - ${c0[2]}) / $hz" | bc)")
  local want
  want=$(psql_src "SELECT count(*) FROM probe")
  [ "$(psql_db "$db" "SELECT count(*) FROM probe")" = "$want" ] || { echo "$key: probe rows differ from the source"; exit 1; }
  read -r p50[$key] p99[$key] pmax[$key] rows[$key] <<< "$(psql_db "$db" "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY d)::numeric, 2),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY d)::numeric, 2),
           round(max(d)::numeric, 2), count(*)
    FROM ($delays) s" |
    tr '|' ' ')"
  [ "${rows[$key]}" = "$want" ] || { echo "$key: the sampler saw ${rows[$key]} of $want probe rows"; exit 1; }
  if [ -n "${TIMELINE:-}" ]; then # per 250 ms of the run: probe rows, their p99 and max delay
    psql_db "$db" "
      SELECT to_char(b, 'MI:SS.MS'), count(*), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY d)::numeric, 1),
             round(max(d)::numeric, 1)
      FROM (SELECT date_bin('250 ms', created_at, 'epoch') AS b,
                   d FROM ($delays) s0) s
      GROUP BY b ORDER BY b" | awk -F'|' -v k="$key" '{ printf "%s %s rows %s p99 %s max %s\n", k, $1, $2, $3, $4 }'
  fi
}

for rate in $rates; do
  # pgshift
  key="pgshift@$rate"; db="t_p$rate"
  psql_dst "CREATE DATABASE $db TEMPLATE t_base"
  psql_src "TRUNCATE probe"
  cat > "$work/p$rate.yaml" <<YAML
name: p$rate
source: {conninfo: "$src"}
target: {conninfo: "$dst_base dbname=$db"}
initial_copy: {enabled: false}
apply: {workers: $workers}
control: {listen: "127.0.0.1:$ctl_port"}
log: {level: warn}
YAML
  # Its own session, as under systemd (see the top of this file).
  setsid ${PGSHIFT_NICE:+nice -n "$PGSHIFT_NICE"} "$bin" run --config "$work/p$rate.yaml" >>"$work/p$rate.log" 2>&1 & daemon=$!
  for _ in $(seq 1 200); do
    [ "$(psql_src "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgshift_p$rate'")" = "t" ] && break
    sleep 0.1
  done
  psql_dst "CHECKPOINT"; psql_src "CHECKPOINT"
  measure "$key" "$db" "pgshift_p$rate" "$daemon"
  # Where apply's time went: batches (source transactions per target commit) and the waits of
  # batches (for a worker, for an earlier conflicting batch, at the commit gate).
  curl -s "http://127.0.0.1:$ctl_port/metrics" | awk -v run="pgshift@$rate" '
    /^pgshift_apply_batches_total / { b = $2 } /^pgshift_apply_statements_total / { st = $2 }
    /^pgshift_apply_batches_one_round_trip_total / { one = $2 }
    /^pgshift_apply_wait_seconds_total/ { match($0, /stage="[a-z_]+"/); w = w " " substr($0, RSTART + 7, RLENGTH - 8) " " sprintf("%.2f s", $2) }
    END { printf "   %s: %d batches (%d in one round trip), %d statements; waits:%s\n", run, b, one, st, w }'
  kill -TERM "$daemon"; wait "$daemon" || true; daemon=""
  psql_src "SELECT pg_drop_replication_slot('pgshift_p$rate')" >/dev/null
  psql_src "DROP PUBLICATION pgshift_p$rate"

  # built-in logical replication
  key="builtin@$rate"; db="t_n$rate"
  psql_dst "CREATE DATABASE $db TEMPLATE t_base"
  psql_src "TRUNCATE probe"
  psql_src "CREATE PUBLICATION b_n$rate FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, probe"
  psql_db "$db" "CREATE SUBSCRIPTION b_n$rate CONNECTION '$src' PUBLICATION b_n$rate WITH (copy_data = false)"
  for _ in $(seq 1 200); do
    [ "$(psql_src "SELECT active FROM pg_replication_slots WHERE slot_name = 'b_n$rate'")" = "t" ] && break
    sleep 0.1
  done
  psql_dst "CHECKPOINT"; psql_src "CHECKPOINT"
  measure "$key" "$db" "b_n$rate" 0
  psql_db "$db" "DROP SUBSCRIPTION b_n$rate"
  psql_src "DROP PUBLICATION b_n$rate"
done

printf "\n| consumer | rate (tps asked / done) | probe rows | p50 ms | p99 ms | max ms | source CPU s | target CPU s | pgshift CPU s |\n|---|---|---|---|---|---|---|---|---|\n"
for rate in $rates; do
  for c in builtin pgshift; do
    key="$c@$rate"
    label=$([ "$c" = builtin ] && echo "built-in replication" || echo "pgshift, apply.workers $workers")
    printf "| %s | %s / %s | %s | %s | %s | %s | %s | %s | %s |\n" "$label" "$rate" "${tps[$key]%.*}" "${rows[$key]}" \
      "${p50[$key]}" "${p99[$key]}" "${pmax[$key]}" "${cpu_s[$key]}" "${cpu_t[$key]}" "${cpu_o[$key]}"
  done
done
