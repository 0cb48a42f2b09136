#!/usr/bin/env bash
# Catch-up benchmark: one pgbench backlog on the source, drained by every consumer from its own
# slot, in the same run. Prints ratios against PostgreSQL's own tools:
#   reader   pgshift's reader (apply blocked) vs pg_recvlogical draining pgoutput to /dev/null
#   apply    pgshift's full catch-up vs a native subscription (CREATE SUBSCRIPTION)
#   control  pgshift's catch-up while /metrics is scraped 20 times a second and /v1/status polled,
#            vs without: three runs of each, alternating, compared by their total time
# Usage: bench/catchup.sh [SECONDS_OF_PGBENCH] [SCALE]   (defaults 20, 5). Needs a built pgshift.
# PROBE=1 also prints what the target's sessions waited on during each catch-up.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-20}
scale=${2:-5}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }

PAIR_SOURCE_SETTINGS=(max_wal_size=4GB)
PAIR_TARGET_SETTINGS=(max_wal_size=4GB)
source "$root/scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null'
dst_base="host=127.0.0.1 port=$dst_port user=postgres"
psql_dst() { "$pgbin/psql" -X -q -A -t -d "$dst_base dbname=$1" -c "$2"; } # DB, SQL
now() { date +%s.%N; }

# Identical starting data everywhere: pgbench's initial data is deterministic.
"$pgbin/pgbench" -i -q -s "$scale" -d "$src" >/dev/null 2>&1
# pgbench_history has no key; pgshift only publishes tables the source can still update. It is
# insert-only, so REPLICA IDENTITY FULL changes nothing for either consumer.
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
psql_dst postgres "CREATE DATABASE t_base"
"$pgbin/pgbench" -i -q -s "$scale" -d "$dst_base dbname=t_base" >/dev/null 2>&1
control_runs="bq1 bs1 bq2 bs2 bq3 bs3" # q = quiet, s = scraped; alternating against drift
for db in t_pgshift t_native t_reader $(for r in $control_runs; do echo "t_$r"; done); do
  psql_dst postgres "CREATE DATABASE $db TEMPLATE t_base"
done

# Every consumer's slot exists before the backlog is written.
config() { # name target_db port
  cat > "$work/$1.yaml" <<YAML
name: $1
source: {conninfo: "$src"}
target: {conninfo: "$dst_base dbname=$2"}
initial_copy: {enabled: false}
apply: {max_queue_bytes: 1073741824}
control: {listen: "127.0.0.1:$3"}
log: {level: warn}
YAML
}
ctl_port=$(free_port)
start_daemon() { "$bin" run --config "$work/$1.yaml" >>"$work/$1.log" 2>&1 & daemon=$!; }
stop_daemon() { kill -TERM "$daemon"; wait "$daemon" || true; daemon=""; }
wait_active() {
  for _ in $(seq 1 200); do
    [ "$(psql_src "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgshift_$1'")" = "t" ] && return 0
    sleep 0.1
  done
  echo "pgshift $1 did not start"; cat "$work/$1.log"; exit 1
}
for n in bpgshift breader $control_runs; do
  case $n in bpgshift) db=t_pgshift ;; breader) db=t_reader ;; *) db="t_$n" ;; esac
  config "$n" "$db" "$ctl_port"
  start_daemon "$n"; wait_active "$n"; stop_daemon
done
psql_src "SELECT pg_create_logical_replication_slot('b_recvlogical', 'pgoutput')" >/dev/null
psql_src "SELECT pg_create_logical_replication_slot('b_native', 'pgoutput')" >/dev/null
psql_dst t_native "CREATE SUBSCRIPTION b_native CONNECTION '$src' PUBLICATION pgshift_bpgshift
                   WITH (create_slot = false, slot_name = 'b_native', enabled = false, copy_data = false)"

echo "== backlog: pgbench -c 4 -T $seconds at scale $scale on the source (no consumer running)"
"$pgbin/pgbench" -n -c 4 -j 2 -T "$seconds" -d "$src" 2>/dev/null | grep -E "^(number of transactions actually|tps)" | sed 's/^/   /'
endpos=$(psql_src "SELECT pg_current_wal_lsn()")
backlog=$(psql_src "SELECT pg_size_pretty(pg_wal_lsn_diff('$endpos', confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = 'b_recvlogical'")
echo "   WAL to decode: $backlog (up to $endpos)"

caught_up() { # slot
  [ "$(psql_src "SELECT confirmed_flush_lsn >= '$endpos' FROM pg_replication_slots WHERE slot_name = '$1'")" = "t" ]
}
# Each measured run starts right after a checkpoint on the target, so every consumer pays the same
# full-page-write cost (a checkpoint falling inside one run otherwise dominates the comparison).
checkpoint() { psql_dst postgres "CHECKPOINT"; }
time_until_caught_up() { # slot -> seconds since $t0
  while ! caught_up "$1"; do
    [ -n "${PROBE:-}" ] && psql_dst postgres "select datname, state, wait_event_type, wait_event, left(query, 40) from pg_stat_activity where backend_type = 'client backend' and state <> 'idle'" >> "$work/waits"
    sleep 0.05; done
  [ -n "${PROBE:-}" ] && sort "$work/waits" | uniq -c | sort -rn | head -12 >&2 && rm -f "$work/waits"
  echo "$(now) - $t0" | bc
}

# 1. pg_recvlogical: the decoding limit of the source.
t0=$(now)
"$pgbin/pg_recvlogical" -d "$src" -S b_recvlogical --start -P pgoutput -o proto_version=1 \
  -o publication_names=pgshift_bpgshift -f /dev/null -E "$endpos" --no-loop -s 1
t_recv=$(echo "$(now) - $t0" | bc)

# 2. pgshift's reader alone: apply is blocked by a lock on the target, the queue is unbounded.
received() { curl -s "http://127.0.0.1:$ctl_port/v1/status" | sed -E 's/.*"received":"([0-9A-F/]+)".*/\1/'; }
"$pgbin/psql" -X -q -d "$dst_base dbname=t_reader" -c "BEGIN; LOCK pgbench_accounts; LOCK pgbench_history; SELECT pg_sleep(600)" >/dev/null 2>&1 &
locker=$!
sleep 0.5
t0=$(now)
start_daemon breader
until [ "$(psql_src "SELECT '$(received || echo 0/0)'::pg_lsn >= '$endpos'" 2>/dev/null)" = "t" ]; do sleep 0.05; done
t_reader=$(echo "$(now) - $t0" | bc)
kill -9 "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
kill "$locker" 2>/dev/null || true; wait "$locker" 2>/dev/null || true
# End the lock holder and the blocked apply session: an open transaction would hold back the
# target's xmin horizon and slow every later run down (dead row versions cannot be pruned).
psql_dst postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 't_reader'" >/dev/null

# 3. pgshift end to end vs 4. the native subscription.
checkpoint; t0=$(now); start_daemon bpgshift; t_pgshift=$(time_until_caught_up pgshift_bpgshift); stop_daemon
checkpoint; t0=$(now); psql_dst t_native "ALTER SUBSCRIPTION b_native ENABLE"
t_native=$(time_until_caught_up b_native)
psql_dst t_native "ALTER SUBSCRIPTION b_native DISABLE"

# 5. control-plane overhead: the same catch-up without and with 20 scrapes/s and status polling.
t_quiet=0; t_scraped=0; runs_quiet=""; runs_scraped=""
for n in $control_runs; do
  checkpoint
  start_daemon "$n"
  scraper=""; poller=""
  if [ "${n:1:1}" = s ]; then
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$ctl_port/livez" && break; sleep 0.05; done
    ( while true; do curl -s -o /dev/null "http://127.0.0.1:$ctl_port/metrics"; sleep 0.05; done ) &
    scraper=$!
    ( while true; do curl -s -o /dev/null "http://127.0.0.1:$ctl_port/v1/status"; sleep 0.2; done ) &
    poller=$!
  fi
  t0=$(now); t=$(time_until_caught_up "pgshift_$n")
  [ -n "$scraper" ] && { kill "$scraper" "$poller"; wait "$scraper" "$poller" 2>/dev/null || true; }
  stop_daemon
  if [ "${n:1:1}" = s ]; then
    t_scraped=$(echo "$t_scraped + $t" | bc); runs_scraped="$runs_scraped $(printf %.2f "$t")"
  else
    t_quiet=$(echo "$t_quiet + $t" | bc); runs_quiet="$runs_quiet $(printf %.2f "$t")"
  fi
done

# Every target must hold exactly the source's data.
digest="SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM pgbench_accounts x"
want=$(psql_src "$digest")
for db in t_pgshift t_native $(for r in $control_runs; do echo "t_$r"; done); do
  [ "$(psql_dst $db "$digest")" = "$want" ] || { echo "target $db differs from the source"; exit 1; }
done

ratio() { echo "scale=2; $1 / $2" | bc; }
printf "\n| measure | pgshift | reference | ratio (pgshift rate / reference rate) |\n|---|---|---|---|\n"
printf "| reader drain of the backlog | %.2f s | pg_recvlogical %.2f s | %s |\n" "$t_reader" "$t_recv" "$(ratio "$t_recv" "$t_reader")"
printf "| catch-up, end to end | %.2f s | native subscription %.2f s | %s |\n" "$t_pgshift" "$t_native" "$(ratio "$t_native" "$t_pgshift")"
printf "| catch-up with 20 scrapes/s + status polls, 3 runs | %.2f s (%s) | without %.2f s (%s) | %s |\n" \
  "$t_scraped" "${runs_scraped# }" "$t_quiet" "${runs_quiet# }" "$(ratio "$t_quiet" "$t_scraped")"
